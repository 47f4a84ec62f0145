// imgfs — WritableFs: the copy-on-write view of a mounted image (`imgfs mount --rw`).
//
// The merged tree is an upper directory on local disk stacked on the immutable image
// (ImageFilesystem, the lower). Everything that changes lands in the upper; the lower is never
// written. The upper follows the kernel overlayfs conventions, so the same directory works
// with `mount -t overlay` and is what `imgfs commit` turns into a layer:
//   - a whiteout is a character device 0/0 named like the deleted entry (all of them links of
//     one inode, as overlayfs makes them);
//   - an opaque directory carries the xattr trusted.overlay.opaque = "y", or, where trusted.*
//     is refused (a mount without root), user.overlay.opaque = "y"; both are read (lower
//     entries below it are hidden; fs/upper/upper_dir.h);
//   - no redirects: a renamed directory that has lower content is copied up whole (upper
//     files are hard-linked, lower ones copied) and marked opaque;
//   - ownership, modes, times and xattrs of upper entries are their own; trusted.overlay.*
//     and user.overlay.* xattrs are never shown to users nor settable by them, and an image's
//     own are never copied up (an image directory carrying
//     trusted.overlay.opaque does not become opaque in the upper);
//   - a symlink has no mode of its own: chmod of one is EOPNOTSUPP, as overlayfs answers.
// Host paths: the upper and the work directory may be changed under the daemon (by the owner
// of a given --upper, by a container on kernel overlayfs). Every access to them goes through
// their directory descriptors with no-follow resolution (fs/upper_dir.h): a directory
// swapped for a symlink at any moment is an error, never a way out of the upper.
// Copy-up (first change of a lower entry) creates the copy under a temporary name in the work
// directory — on the same filesystem as the upper — and renames it into place, so a killed
// daemon never leaves a half-copied file visible; the work directory is emptied when the next
// WritableFs of a new mount opens.
//
// Takeover (a kept mount, fs/fuse/takeover.h): what the kernel holds — ids with their lookup
// counts, open handles, st_ino of upper inodes — is journaled in the work directory
// (fs/writable/writable_journal.h) before each reply that hands it out, and a WritableFs
// opened with `takeover` restores it from there instead of starting afresh. A file unlinked
// (or renamed over) while open is moved into the work directory as the journal's
// OrphanName(id) rather than removed, so that handles reopened by the next daemon still reach
// its data; it is removed at the last release. That holds for a file with other names too
// (the name moves, its link count stays): stat does not count names in the work directory. A lock
// on the work directory (flock) keeps two WritableFs from serving one work directory at once.
// Requests the dead daemon had read but not answered are sent again by the kernel, marked so and
// with their first number (RequestId, set by the FUSE adapter through RequestScope). The journal
// records that number with each lookup it counts, each handle it opens and each unlink, rmdir and
// rename done; a request sent again that it records is answered from there without being done or
// counted again — lookup, mknod, mkdir, symlink, link: the recorded id with fresh attributes; open:
// the recorded handle; create: both; unlink, rmdir, rename: done. Anything else — a request not
// marked as sent again, or one the journal does not record — is done for real, so a new
// request identical to one done before the takeover gets the real answer (ENOENT, EEXIST).
// A change made in the upper by a daemon killed before its journal line is found done when
// the request comes again: an unlink/rmdir/rename finding its name gone is answered done and
// the node table follows the upper (GoneBeforeJournaled); a request that makes a name journals
// that it started, once the name is found free and before making it (JournalStarted), so sent
// again it answers with the name it finds made (AnswerIfResent), O_EXCL too. What stays
// inexact: forgets (FORGET has no reply; one a dead daemon read but did not apply is not sent
// again, and the id it would have freed stays until unmount), and a listing with entries
// (READDIRPLUS, LookupListed) sent again, whose names are counted again (the same). The parent's
// times are restored after a copy-up, like overlayfs does. A lower regular file with several names
// (a hardlink group) is copied up once and its other visible names are linked to the copy, so the
// group stays one inode.
//
// Inodes: the FUSE-facing numbers ("ids") are per merged name (hardlinks get one id per
// name), allocated at lookup and freed by Forget when the kernel's lookup count reaches zero
// (root is id 1, never freed). st_ino is stable across copy-up: an entry that came from the
// lower keeps the lower inode number; upper-only entries get numbers above the image's inode
// count, one per upper inode (hardlinks share it).
//
// Errors: every operation returns 0 or a positive errno — the exact errno the kernel would
// give (ENOTEMPTY, EEXIST, EXDEV, ENOSPC, ...), which a Status code cannot carry; the FUSE
// adapter (fs/fuse_ops_rw.cc) replies with it unchanged.
//
// Thread-safety: all methods may be called concurrently. One mutex serialises the namespace
// (node table and every change to the upper directory, like a filesystem-wide directory lock);
// file data reads and writes on open handles run outside it, and so does the copying of a
// lower file's data for the copy-up that an open for writing, a setattr, a setxattr, a rename
// or a link of a file makes (PreparedData): such a copy-up of a large or lazily fetched file
// holds up no other request. What still copies under the mutex: a rename of an image
// directory (its whole tree), a rename over an image file that has other names, a removexattr.
#ifndef IMGFS_FS_WRITABLE_WRITABLE_FS_H_
#define IMGFS_FS_WRITABLE_WRITABLE_FS_H_

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "fs/core/filesystem.h"
#include "fs/upper/upper_dir.h"
#include "fs/writable/writable_journal.h"

namespace imgfs::fs {

// Who asks: owner of created entries.
struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
};

// A name handed to the kernel: its id, attributes, and whether the kernel may cache it for
// long (false for anything that lives in the upper or may change without the kernel seeing
// it, such as a lower hardlink whose group gets copied up through another name).
struct Entry {
  uint64_t id = 0;
  struct stat attr {};
  bool cacheable = false;
};

// setattr request (what FUSE_SET_ATTR_* bits ask for).
struct SetAttrRequest {
  bool set_mode = false;
  mode_t mode = 0;
  bool set_uid = false;
  uid_t uid = 0;
  bool set_gid = false;
  gid_t gid = 0;
  bool set_size = false;
  off_t size = 0;
  bool set_atime = false;
  bool atime_now = false;
  struct timespec atime {};
  bool set_mtime = false;
  bool mtime_now = false;
  struct timespec mtime {};
  // Then clear the setuid bit, and the setgid bit when group-execute is set, of a regular
  // file (the kernel's FATTR_KILL_SUIDGID: a truncate by a caller without CAP_FSETID, a
  // chown). The daemon writes as root, which the upper's filesystem never clears them for.
  bool drop_suid_sgid = false;
};

// One name of a directory listing.
struct MergedDirEntry {
  std::string name;
  uint64_t st_ino = 0;
  mode_t type = 0;  // S_IFMT bits
};

// The kernel request an operation answers (fs/fuse/lowlevel.h FuseRequestId): its number
// without the resend bit (0: none, as in tests and internal calls) and whether the kernel
// sent it again after a takeover.
struct RequestId {
  uint64_t unique = 0;
  bool resent = false;
};

class WritableFs {
 public:
  // Marks the operations the calling thread runs while it lives as answering `request` (the
  // FUSE adapter wraps each callback in one); scopes nest, the inner one wins.
  class RequestScope {
   public:
    explicit RequestScope(RequestId request);
    ~RequestScope();
    RequestScope(const RequestScope&) = delete;
    RequestScope& operator=(const RequestScope&) = delete;

   private:
    RequestId outer_;
  };

  // Opens the merged view of `lower` (not owned; outlives this) and `upper_dir` (must exist).
  // `work_dir` must be on the upper's filesystem and not inside it. It is made fresh: created
  // 0700 and owned by the caller through a descriptor of its parent (whose owner may be
  // someone else); a leftover of a killed daemon is emptied first if it is a directory owned
  // by the caller, anything else there is InvalidArgument. It is removed by the destructor
  // (only while its name still holds the directory made here). A fresh (empty) upper gets the lower
  // root's mode, owner and times, so the merged root looks like the image's. InvalidArgument when
  // the directories are unusable (EXDEV between them, no whiteout support), Io otherwise.
  // `takeover`: the work directory of a daemon that died is not emptied; the state its
  // journal records is restored (NotFound without a work directory or journal, Corrupt for a
  // journal that does not load). Unavailable when another WritableFs holds the work directory.
  static Result<std::unique_ptr<WritableFs>> Open(const ImageFilesystem* lower,
                                                  const std::string& upper_dir,
                                                  const std::string& work_dir,
                                                  bool takeover = false);
  ~WritableFs();
  WritableFs(const WritableFs&) = delete;
  WritableFs& operator=(const WritableFs&) = delete;

  // The default work directory for `upper_dir`: a hidden sibling ".NAME.imgfs-work" when the
  // parent is on the same filesystem, else "" (the caller must then name one).
  static std::string DefaultWorkDir(const std::string& upper_dir);

  const std::string& upper_dir() const { return upper_path_; }
  const std::string& work_dir() const { return work_path_; }

  // Name operations. Those returning an Entry count one kernel lookup on it (Forget undoes).
  int Lookup(uint64_t parent, std::string_view name, Entry* out);
  // Lookup of a name for a directory listing with attributes (READDIRPLUS), one request
  // counting many: never answered as sent again, and not recorded as the request's answer. A
  // listing sent again after a takeover counts its names again; those ids then stay until
  // unmount, as a lost forget's do.
  int LookupListed(uint64_t parent, std::string_view name, Entry* out);
  void Forget(uint64_t id, uint64_t nlookup);
  int GetAttr(uint64_t id, struct stat* out, bool* cacheable);
  // `fh` (0 = none) is an open handle of `id` used for fd-based changes (ftruncate).
  // `cacheable` (optional): whether the kernel may keep the answered attributes for long.
  int SetAttr(uint64_t id, const SetAttrRequest& request, uint64_t fh, struct stat* out,
              bool* cacheable = nullptr);
  int ReadLink(uint64_t id, std::string* target);
  int Mknod(uint64_t parent, std::string_view name, mode_t mode, dev_t rdev, const Caller& caller,
            Entry* out);
  int Mkdir(uint64_t parent, std::string_view name, mode_t mode, const Caller& caller, Entry* out);
  int Unlink(uint64_t parent, std::string_view name);
  int Rmdir(uint64_t parent, std::string_view name);
  int Symlink(std::string_view target, uint64_t parent, std::string_view name, const Caller& caller,
              Entry* out);
  // `flags`: 0 or RENAME_NOREPLACE (RENAME_EXCHANGE and RENAME_WHITEOUT: EINVAL).
  int Rename(uint64_t parent, std::string_view name, uint64_t new_parent, std::string_view new_name,
             unsigned flags);
  int Link(uint64_t id, uint64_t new_parent, std::string_view new_name, Entry* out);

  // Files. A handle opened for writing (or O_TRUNC) copies the file up first.
  // `cacheable`: the kernel may keep cached pages (lower file not part of a hardlink group).
  // `drop_suid_sgid`: DropSuidSgid of the opened handle (the kernel's FUSE_OPEN_KILL_SUIDGID,
  // asked with O_TRUNC); when that fails the handle is released and its error returned.
  int Open(uint64_t id, int flags, uint64_t* fh, bool* cacheable, bool drop_suid_sgid = false);
  // `drop_suid_sgid`: as for Open, when the name exists and is opened (no O_EXCL); a file made
  // now keeps the mode asked for.
  int Create(uint64_t parent, std::string_view name, mode_t mode, int flags, const Caller& caller,
             Entry* out, uint64_t* fh, bool drop_suid_sgid = false);
  int Read(uint64_t fh, uint64_t offset, size_t size, std::string* out);
  int Write(uint64_t fh, uint64_t offset, const char* data, size_t size, size_t* written);
  int Fsync(uint64_t fh, bool datasync);
  // Clears the setuid bit, and the setgid bit when group-execute is set, of the regular file
  // `fh` has open in the upper (the kernel's FUSE_WRITE_KILL_SUIDGID and
  // FUSE_OPEN_KILL_SUIDGID: a write or O_TRUNC by a caller without CAP_FSETID). 0 for a handle
  // on an unchanged lower file, which no write reaches. A changed mode adds the file's id to
  // TakeInvalidations.
  int DropSuidSgid(uint64_t fh);
  void Release(uint64_t fh);

  // Directories: the merged listing of `id` (names sorted, without "." and "..") and the id
  // of its parent for "..".
  int ReadDir(uint64_t id, std::vector<MergedDirEntry>* out, uint64_t* parent_st_ino);

  // statvfs of the upper's filesystem (free space is what writes can use).
  int StatFs(struct statvfs* out);

  int SetXattr(uint64_t id, std::string_view name, std::string_view value, int flags);
  int GetXattr(uint64_t id, std::string_view name, std::string* value);
  int ListXattr(uint64_t id, std::vector<std::string>* names);
  int RemoveXattr(uint64_t id, std::string_view name);

  // Ids whose kernel-cached attributes and pages went stale during the calling thread's last
  // operations (a lower file handed out as cacheable that got a second name, an image
  // directory copied up, the image entries below a directory copied up whole by a rename):
  // the FUSE adapter invalidates them (fuse_lowlevel_notify_inval_inode) before it replies to
  // every changing request. Cleared.
  static std::vector<uint64_t> TakeInvalidations();

  // Number of ids the kernel holds (root included); for tests of lookup counting.
  size_t node_count() const;

  // For tests of takeover: the lookup count of `id` (0 if unknown), the st_ino a number of
  // the upper's inodes is shown as (0 if none yet), and the ids of the open handles.
  uint64_t lookup_count(uint64_t id) const;
  uint64_t shown_ino(ino_t upper_ino) const;
  std::map<uint64_t, uint64_t> handle_ids() const;

  // For tests: called before each chunk of a lower file's data is copied (CopyLowerData).
  // Set before the filesystem is used from more than one thread.
  void set_copy_chunk_hook_for_tests(std::function<void()> hook) {
    copy_chunk_hook_ = std::move(hook);
  }

 private:
  struct Node;
  struct Handle;
  struct State;  // what a merged path is: upper entry, lower inode, opacity

  WritableFs(const ImageFilesystem* lower, std::string upper_path, std::string work_path);

  Node* GetNode(uint64_t id) const IMGFS_REQUIRES(mu_);
  std::string PathOf(const Node* node) const IMGFS_REQUIRES(mu_);
  Node* FindNode(const std::string& path) const IMGFS_REQUIRES(mu_);
  State NodeState(const Node* node) const IMGFS_REQUIRES(mu_);
  int ResolveChild(const State& parent, const std::string& parent_path, std::string_view name,
                   State* out) const IMGFS_REQUIRES(mu_);
  int ResolvePath(const std::string& path, State* out) const IMGFS_REQUIRES(mu_);
  bool LowerHas(const State& parent, std::string_view name, uint32_t* lower_ino) const
      IMGFS_REQUIRES(mu_);
  int StatState(const State& state, const std::string& path, struct stat* out) IMGFS_REQUIRES(mu_);
  int StatNode(Node* node, struct stat* out) IMGFS_REQUIRES(mu_);
  bool Cacheable(const Node* node) const IMGFS_REQUIRES(mu_);
  uint64_t UpperIno(ino_t upper_ino, uint32_t origin) IMGFS_REQUIRES(mu_);
  void ForgetUpperIno(ino_t upper_ino) IMGFS_REQUIRES(mu_);
  // `st`, an upper inode's stat, as the tree shows it: its st_ino numbered (UpperIno), its
  // names in the work directory (orphans) not counted in st_nlink.
  void ShowUpper(struct stat* st, uint32_t origin) IMGFS_REQUIRES(mu_);
  // `created`: the name was just made by the request (journaled so). `listed`: for
  // LookupListed (not journaled as the request's answer).
  int MakeEntry(Node* parent, std::string_view name, const State& state, Entry* out,
                bool created = false, bool listed = false) IMGFS_REQUIRES(mu_);
  int LookupChild(uint64_t parent, std::string_view name, Entry* out, bool listed)
      IMGFS_REQUIRES(mu_);
  int Merged(const State& state, const std::string& path, std::vector<MergedDirEntry>* out)
      IMGFS_REQUIRES(mu_);
  std::string TempName();
  // Creates the work directory (work_path_) beside the upper, or with `takeover` opens the
  // one a dead daemon left; see the .cc.
  Status MakeWorkDir(bool takeover);
  // Rebuilds nodes, st_ino numbers and handles from journal_ (a takeover).
  Status Restore() IMGFS_REQUIRES(mu_);
  // Logs a journal write that failed (the journal then removes itself).
  static void Journaled(const Status& st);
  // Room in the journal for a request (WritableJournal::Reserve): ENOSPC when `makes`
  // (it makes or copies up something) and half the journal's reserve can't be kept, or when
  // even the few lines of another can't be had.
  int JournalRoom(bool makes);
  bool HasHandles(uint64_t id) const IMGFS_EXCLUDES(handles_mu_);
  // Moves the upper file at `path` of `node` (open: HasHandles) into the work directory as
  // its orphan, instead of removing it.
  int KeepOrphan(Node* node, const std::string& path) IMGFS_REQUIRES(mu_);
  // Opens node's orphan in the work directory (O_PATH, not following a link) into
  // node->orphan, *st its stat, and counts that name in work_links_. False, with node->orphan
  // closed, when there is none or it is not a regular file (only regular files are kept).
  bool OpenOrphan(Node* node, struct stat* st) IMGFS_REQUIRES(mu_);
  // Undoes KeepOrphan (the change it was for failed): the file gets `path` back.
  void ReturnOrphan(Node* node, const std::string& path) IMGFS_REQUIRES(mu_);
  // One name of the upper inode `upper_ino` left the work directory (work_links_).
  void WorkLinkGone(ino_t upper_ino) IMGFS_REQUIRES(mu_);
  // The calling thread's request (RequestScope).
  static RequestId CurrentRequest();
  // What the journal records of the calling thread's request when the kernel sent it again
  // (a takeover); nullopt for any other request.
  std::optional<WritableJournal::RequestRecord> Resent() const;
  // Whether `r` is ENOENT of a request the kernel sent again that the journal does not
  // record: the dead daemon read it and may have removed the name before it could journal
  // that (unlink, rmdir, the source of a rename), which is what a missing name then shows.
  // The request is then answered done, and the node table is made to follow the upper.
  static bool GoneBeforeJournaled(int r);
  // The node table's side of an unlink or rmdir of a name in `dir` done in the upper: `node`
  // (the name's node, may be null) is gone.
  void Removed(Node* dir, Node* node) IMGFS_REQUIRES(mu_);
  // The node table's side of a rename in the upper: `snode` (the source's node, may be null)
  // now has the name `new_name` in `p2`, `dnode` (what had that name, may be null) is gone.
  // `dir`: the source is a directory, `had_lower`: one with lower content (now copied up whole).
  // `snode` may be a deleted node (vanished_): it gets its name back.
  void Moved(Node* p1, Node* p2, Node* snode, Node* dnode, std::string_view new_name, bool dir,
             bool had_lower) IMGFS_REQUIRES(mu_);
  // `out` for the id `id` a request sent again was answered with (fresh attributes, the
  // lookup not counted again): 0 or an errno; -1 when the id is gone (the request is then
  // done for real).
  int AnswerResent(uint64_t id, Entry* out) IMGFS_REQUIRES(mu_);
  // Journals that the calling thread's request (if any) is done.
  void JournalDone();
  // Journals that the calling thread's request (if any) is about to make a name (Started).
  void JournalStarted();
  // For a request that makes or finds the name `name` in `parent`, sent again after a
  // takeover: the answer the dead daemon had journaled (`answered_id`, its id), or — when it
  // had journaled only that it started (JournalStarted) and the name exists — the entry of
  // what it made, looked up now, with `caller` and `mode` (when given) set on it again (the
  // daemon may have died before it set them). 0 or an errno when answered so; -1 when the
  // request is to be done for real.
  int AnswerIfResent(uint64_t parent, std::string_view name, Entry* out,
                     const Caller* caller = nullptr, mode_t mode = 0) IMGFS_REQUIRES(mu_);
  // For a request that makes a name, started but not answered before a takeover and sent
  // again, when the name `name` in `dir_path` is there (made by the dead daemon): sets its
  // owner and mode again (SetNewOwner for a new entry of type `type`), as the daemon may have
  // died before it set them. 0 or an errno.
  int SetNewOwnerAgain(const std::string& dir_path, std::string_view name, const Caller& caller,
                       mode_t type, mode_t mode) IMGFS_REQUIRES(mu_);
  // After the last release of `id`: removes its orphan, if it has one.
  void DropOrphan(uint64_t id) IMGFS_EXCLUDES(mu_);

  // Copy-up.
  //
  // A lower regular file's data copied into the work directory before the namespace lock is
  // taken (PrepareData), for the copy-up made under it to take (CopyLowerTo) instead of
  // copying there. Its file is removed at destruction unless a copy-up took it. Used by one
  // thread.
  class PreparedData {
   public:
    PreparedData() = default;
    ~PreparedData();
    PreparedData(PreparedData&& other) noexcept;
    PreparedData& operator=(PreparedData&& other) noexcept;
    PreparedData(const PreparedData&) = delete;
    PreparedData& operator=(const PreparedData&) = delete;

   private:
    friend class WritableFs;
    int work_fd = -1;    // the filesystem's, not owned
    uint32_t lower = 0;  // 0: nothing prepared
    std::string name;    // in the work directory; "" once taken
    int error = 0;       // copying failed with this errno: the copy-up answers it
  };
  // The data of `id`'s lower file copied for a copy-up, when `id` is a lower regular file;
  // nothing prepared otherwise. Takes mu_ only to look `id` up.
  PreparedData PrepareData(uint64_t id) IMGFS_EXCLUDES(mu_);
  // The same for the entry `name` of the directory `parent` (a rename's source).
  PreparedData PrepareChildData(uint64_t parent, std::string_view name) IMGFS_EXCLUDES(mu_);
  // The data of the lower file `lower` copied (0: nothing prepared).
  PreparedData PrepareLowerData(uint32_t lower) IMGFS_EXCLUDES(mu_);
  // Copies the data of the lower file `lower_ino` into `fd`: 0 or an errno (EIO for a lower
  // read that failed, logged with `what`). No lock needed: the image never changes.
  int CopyLowerData(uint32_t lower_ino, int fd, const std::string& what);
  // Copies the directory `path` and its parents up where they are not yet; nothing resolved
  // when the node table knows it as upper (an upper directory's parents are all upper).
  int EnsureUpperDir(const std::string& path) IMGFS_REQUIRES(mu_);
  // EnsureUpperDir of the directory node `dir` (its state then says upper).
  int EnsureUpperDirOf(Node* dir) IMGFS_REQUIRES(mu_);
  // `prepared` (optional): the file's data, when it was copied before (PrepareData).
  int CopyUp(Node* node, bool with_data, PreparedData* prepared = nullptr) IMGFS_REQUIRES(mu_);
  int CopyUpPath(const std::string& path, const State& state, bool with_data,
                 PreparedData* prepared = nullptr) IMGFS_REQUIRES(mu_);
  int CopyLowerTo(uint32_t lower_ino, int dir_fd, const std::string& dir_path,
                  const std::string& name, bool with_data, bool with_xattrs,
                  PreparedData* prepared = nullptr) IMGFS_REQUIRES(mu_);
  int LinkGroup(const std::string& path, uint32_t lower_ino) IMGFS_REQUIRES(mu_);
  // `copied`: lower inodes already copied into this tree (hardlink groups stay together).
  int CopyMergedTree(const State& state, const std::string& src_path, const std::string& dst_name,
                     std::unordered_map<uint32_t, std::string>* copied) IMGFS_REQUIRES(mu_);
  int CopyUpperTree(const std::string& src_path, const std::string& dst_work_path)
      IMGFS_REQUIRES(mu_);
  // Whiteouts are links of one shared whiteout in the work directory (kSharedWhiteout), as
  // overlayfs shares its own: a link is cheap where a new inode for every deleted name is not
  // (rm -rf of an image tree). Falls back to a new 0/0 device when linking fails.
  int LinkWhiteout(int root_fd, const std::string& rel) IMGFS_REQUIRES(mu_);
  int MakeWhiteout(const std::string& path, bool replace) IMGFS_REQUIRES(mu_);
  int PlaceFromWork(const std::string& tmp, const std::string& path) IMGFS_REQUIRES(mu_);
  int ParentForCreate(uint64_t parent, std::string_view name, Node** dir, State* dir_state,
                      bool* over_whiteout) IMGFS_REQUIRES(mu_);
  // Where a new entry `name` of a directory is made: at dir_path/name in the upper, or — over
  // a whiteout — as `tmp` in the work dir, moved over the whiteout by FinishCreate.
  struct CreateSite {
    Node* dir = nullptr;
    std::string dir_path;
    bool over_whiteout = false;
    std::string tmp;      // work-dir name when over_whiteout
    int at = -1;          // the directory fd to create in (work or upper) ...
    std::string name_at;  // ... and the name there
  };
  // ParentForCreate, then the site of the new entry.
  int PrepareCreate(uint64_t parent, std::string_view name, CreateSite* site) IMGFS_REQUIRES(mu_);
  // Moves a created entry into place (over a whiteout) and answers its Entry.
  int FinishCreate(const CreateSite& site, std::string_view name, mode_t mode, Entry* out)
      IMGFS_REQUIRES(mu_);
  void Detach(Node* node) IMGFS_REQUIRES(mu_);
  void MarkSubtreeUpper(Node* node) IMGFS_REQUIRES(mu_);
  void MaybeErase(Node* node) IMGFS_REQUIRES(mu_);
  std::shared_ptr<Handle> GetHandle(uint64_t fh) const IMGFS_EXCLUDES(handles_mu_);
  // Open without clearing setuid bits.
  int OpenHandle(uint64_t id, int flags, uint64_t* fh, bool* cacheable);

  const ImageFilesystem* lower_;
  const NodeTable& table_;
  const std::string upper_path_;
  const std::string work_path_;
  UniqueFd upper_fd_;
  UniqueFd work_fd_;  // flock(LOCK_EX) held for the life of this filesystem
  // Internally synchronised; set by Open, never null after.
  std::unique_ptr<WritableJournal> journal_;
  UniqueFd work_parent_fd_;  // O_PATH; the work dir is work_name_ in it
  std::string work_name_;

  // Lock order: mu_ before handles_mu_ before Handle::mu. The private helpers above run
  // with mu_ held; mu_ guards the fields below up to handles_mu_, which guards the rest.
  mutable Mutex mu_;
  std::unordered_map<uint64_t, std::unique_ptr<Node>> nodes_ IMGFS_GUARDED_BY(mu_);
  // Names the journal had that the upper no longer has at a takeover, (parent id, name) -> id:
  // a rename the kernel sends again finds its source here (Rename).
  std::map<std::pair<uint64_t, std::string>, uint64_t, std::less<>> vanished_ IMGFS_GUARDED_BY(mu_);
  uint64_t next_id_ IMGFS_GUARDED_BY(mu_) = 2;
  // st_ino of upper inodes, and which upper inode holds each number (a number is never
  // given to two upper inodes: a file that replaced an image file of the same name does not
  // get the image file's number if the image file's copy has it).
  std::unordered_map<ino_t, uint64_t> upper_inos_ IMGFS_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, ino_t> claimed_inos_ IMGFS_GUARDED_BY(mu_);
  // Upper inodes with names in the work directory (orphans), upper st_ino -> how many.
  std::unordered_map<ino_t, uint32_t> work_links_ IMGFS_GUARDED_BY(mu_);
  uint64_t next_st_ino_ IMGFS_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> temp_counter_{0};  // TempName, also called without mu_
  // Counts the times a name known to the kernel moved from the lower to the upper: a read
  // handle opened on a lower file looks for an upper copy only when it changed (lock-free
  // reads of unchanged image files).
  std::atomic<uint64_t> copy_ups_{0};
  // Lower inodes with more than one name: their names (parent lower dir, name), built once.
  std::unordered_map<uint32_t, std::vector<std::pair<uint32_t, std::string>>> lower_links_
      IMGFS_GUARDED_BY(mu_);
  bool lower_links_built_ IMGFS_GUARDED_BY(mu_) = false;

  std::function<void()> copy_chunk_hook_;  // set_copy_chunk_hook_for_tests

  mutable Mutex handles_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Handle>> handles_ IMGFS_GUARDED_BY(handles_mu_);
  uint64_t next_fh_ IMGFS_GUARDED_BY(handles_mu_) = 1;
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_WRITABLE_WRITABLE_FS_H_
