// imgfs — the libfuse low-level operations of a writable (copy-on-write) mount.
//
// A thin shell over WritableFs (fs/writable_fs.h): every callback is noexcept, calls the core,
// and replies exactly once with the core's errno. Kernel caching: attributes and pages of an
// entry change only through requests the kernel sees on that entry's id — which updates or
// drops what it caches — or through changes the core reports (copy-ups, renames of copied
// trees, a new name for a file: Invalidate), so they keep long timeouts. Files with several
// names (one id per name: a change through one name is not seen on the others) get attribute
// timeout 0 and no kept pages. Entries themselves (name → inode) change only through requests
// the kernel sees, so they keep long timeouts.
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/log.h"
#include "base/mutex.h"
#include "fs/fuse/fuse_ops.h"
#include "fs/fuse/lowlevel.h"
#include "fs/fuse/read_ahead.h"
#include "fs/fuse/reply.h"
#include "fs/writable/writable_fs.h"

namespace imgfs::fs {
namespace {

WritableFs& Wfs(fuse_req_t req) { return *ContextOf(req).writable; }

Caller CallerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Caller c;
  c.uid = ctx->uid;
  c.gid = ctx->gid;
  return c;
}

// Serve, with the request the core answers marked (WritableFs::RequestScope): what it hands
// out is journaled with the request's number, and a request sent again after a takeover is
// answered from the journal.
template <typename Body>
void ServeRw(fuse_req_t req, FuseOp op, Body&& body) noexcept {
  Serve(req, op, [&] {
    const FuseRequestId request = CurrentRequest();
    const WritableFs::RequestScope scope(RequestId{request.unique, request.resent});
    body();
  });
}

void CountRequest(fuse_req_t req, FuseOp op) { ContextOf(req).requests.Count(op); }

void ReplyErr(fuse_req_t req, const char* op, int err) { ReplyErrno(req, op, 0, err); }

// Unchanged lower content is cached for long; anything that may change, not at all.
// A reply the kernel did not take (the request was interrupted) takes no lookup: undone.
// The kernel's entry for `entry`: attributes kept for long only when cacheable.
fuse_entry_param EntryParamFor(const Entry& entry) {
  return EntryParam(entry.id, entry.attr, entry.cacheable ? kImmutableTimeoutSeconds : 0);
}

void ReplyEntryFor(fuse_req_t req, const Entry& entry) {
  const fuse_entry_param e = EntryParamFor(entry);
  if (fuse_reply_entry(req, &e) != 0) Wfs(req).Forget(entry.id, 1);
}

// Drops what the kernel caches of the inodes the last operation changed behind its back
// (before the reply, so the caller's next call sees fresh attributes and pages).
void Invalidate(fuse_req_t req) {
  fuse_session* se = ContextOf(req).session;
  for (uint64_t id : WritableFs::TakeInvalidations()) {
    if (se != nullptr) fuse_lowlevel_notify_inval_inode(se, id, 0, 0);
  }
}

// Invalidate for a request during which the kernel holds the file's pages locked (a WRITE):
// the attributes only.
void InvalidateAttributes(fuse_req_t req) {
  fuse_session* se = ContextOf(req).session;
  for (uint64_t id : WritableFs::TakeInvalidations()) {
    if (se != nullptr) fuse_lowlevel_notify_inval_inode(se, id, -1, 0);
  }
}

void Init(void* userdata, fuse_conn_info* conn) noexcept {
  static_cast<FuseContext*>(userdata)->requests.Count(FuseOp::kInit);
  if ((conn->capable & FUSE_CAP_ASYNC_READ) != 0) conn->want |= FUSE_CAP_ASYNC_READ;
  static_cast<FuseContext*>(userdata)->requests.set_direct_writes(
      conn->proto_major > 7 || (conn->proto_major == 7 && conn->proto_minor >= 39));
  // An O_TRUNC open is then one request. Only with FUSE_HANDLE_KILLPRIV_V2, which tells the
  // daemon to clear setuid bits at it: without, the kernel skips its own clearing for an open
  // that truncates, and the daemon truncates as root.
  if ((conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) != 0 && NegotiatingHandleKillprivV2()) {
    conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
  } else {
    conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  }
  // Listings with attributes when the kernel finds them useful (DoReaddir). The first
  // FUSE_HANDLE_KILLPRIV (which libfuse 3.14 wants by default but never sends) would have the
  // daemon clear setuid bits at every write, without knowing whether the writer may keep them.
  if ((conn->capable & FUSE_CAP_READDIRPLUS) != 0) conn->want |= FUSE_CAP_READDIRPLUS;
  if ((conn->capable & FUSE_CAP_READDIRPLUS_AUTO) != 0) conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
  conn->want &= ~(FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_HANDLE_KILLPRIV);
  const std::string& mountpoint = static_cast<FuseContext*>(userdata)->mountpoint;
  if (!mountpoint.empty()) {
    conn->max_readahead = RaiseMountReadAhead(mountpoint, kMountReadAheadKib, conn->max_readahead);
  }
  RunInitHook(userdata);
}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  ServeRw(req, FuseOp::kLookup, [&] {
    Entry entry;
    int err = Wfs(req).Lookup(parent, name, &entry);
    if (err == ENOENT) return ReplyNegativeEntry(req);
    if (err != 0) return ReplyErr(req, "lookup", err);
    ReplyEntryFor(req, entry);
  });
}

void Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) noexcept {
  ServeRw(req, FuseOp::kForget, [&] {
    Wfs(req).Forget(ino, nlookup);
    fuse_reply_none(req);
  });
}

void ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) noexcept {
  ServeRw(req, FuseOp::kForgetMulti, [&] {
    for (size_t i = 0; i < count; ++i) Wfs(req).Forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
  });
}

void Getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) noexcept {
  ServeRw(req, FuseOp::kGetattr, [&] {
    struct stat st {};
    bool cacheable = false;
    int err = Wfs(req).GetAttr(ino, &st, &cacheable);
    if (err != 0) return ReplyErr(req, "getattr", err);
    fuse_reply_attr(req, &st, cacheable ? kImmutableTimeoutSeconds : 0);
  });
}

void Setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
             fuse_file_info* fi) noexcept {
  ServeRw(req, FuseOp::kSetattr, [&] {
    SetAttrRequest r;
    r.set_mode = (to_set & FUSE_SET_ATTR_MODE) != 0;
    r.mode = attr->st_mode;
    r.set_uid = (to_set & FUSE_SET_ATTR_UID) != 0;
    r.uid = attr->st_uid;
    r.set_gid = (to_set & FUSE_SET_ATTR_GID) != 0;
    r.gid = attr->st_gid;
    r.set_size = (to_set & FUSE_SET_ATTR_SIZE) != 0;
    r.size = attr->st_size;
    r.set_atime = (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) != 0;
    r.atime_now = (to_set & FUSE_SET_ATTR_ATIME_NOW) != 0;
    r.atime = attr->st_atim;
    r.set_mtime = (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) != 0;
    r.mtime_now = (to_set & FUSE_SET_ATTR_MTIME_NOW) != 0;
    r.mtime = attr->st_mtim;
    r.drop_suid_sgid = CurrentRequest().drop_suid_sgid;
    struct stat st {};
    bool cacheable = false;
    int err = Wfs(req).SetAttr(ino, r, fi != nullptr ? fi->fh : 0, &st, &cacheable);
    Invalidate(req);
    if (err != 0) return ReplyErr(req, "setattr", err);
    fuse_reply_attr(req, &st, cacheable ? kImmutableTimeoutSeconds : 0);
  });
}

void Readlink(fuse_req_t req, fuse_ino_t ino) noexcept {
  ServeRw(req, FuseOp::kReadlink, [&] {
    std::string target;
    int err = Wfs(req).ReadLink(ino, &target);
    if (err != 0) return ReplyErr(req, "readlink", err);
    fuse_reply_readlink(req, target.c_str());
  });
}

void Mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) noexcept {
  ServeRw(req, FuseOp::kMknod, [&] {
    Entry entry;
    int err = Wfs(req).Mknod(parent, name, mode, rdev, CallerOf(req), &entry);
    Invalidate(req);
    if (err != 0) return ReplyErr(req, "mknod", err);
    ReplyEntryFor(req, entry);
  });
}

void Mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept {
  ServeRw(req, FuseOp::kMkdir, [&] {
    Entry entry;
    int err = Wfs(req).Mkdir(parent, name, mode, CallerOf(req), &entry);
    Invalidate(req);
    if (err != 0) return ReplyErr(req, "mkdir", err);
    ReplyEntryFor(req, entry);
  });
}

void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  ServeRw(req, FuseOp::kUnlink, [&] {
    int err = Wfs(req).Unlink(parent, name);
    Invalidate(req);
    fuse_reply_err(req, err);
  });
}

void Rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  ServeRw(req, FuseOp::kRmdir, [&] {
    int err = Wfs(req).Rmdir(parent, name);
    Invalidate(req);
    fuse_reply_err(req, err);
  });
}

void Symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) noexcept {
  ServeRw(req, FuseOp::kSymlink, [&] {
    Entry entry;
    int err = Wfs(req).Symlink(link, parent, name, CallerOf(req), &entry);
    Invalidate(req);
    if (err != 0) return ReplyErr(req, "symlink", err);
    ReplyEntryFor(req, entry);
  });
}

void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
            const char* newname, unsigned int flags) noexcept {
  ServeRw(req, FuseOp::kRename, [&] {
    int err = Wfs(req).Rename(parent, name, newparent, newname, flags);
    Invalidate(req);
    fuse_reply_err(req, err);
  });
}

void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) noexcept {
  ServeRw(req, FuseOp::kLink, [&] {
    Entry entry;
    int err = Wfs(req).Link(ino, newparent, newname, &entry);
    Invalidate(req);
    if (err != 0) return ReplyErr(req, "link", err);
    ReplyEntryFor(req, entry);
  });
}

// A write-only handle bypasses the kernel's page cache (FOPEN_DIRECT_IO): each write(2) is
// one WRITE, where a cached write that starts or ends inside a page the kernel does not hold
// is sent in two, and the kernel asks for no security.capability before it (the upper's own
// filesystem removes it when the daemon writes; the setuid bits go by
// FUSE_WRITE_KILL_SUIDGID). Untar sends 15 % fewer requests, `dd` to the mount copies the
// data once less. Nothing is lost: such a handle cannot be mapped, and the kernel writes back
// and drops the pages other handles cached of the range written — since FUSE 7.39 (Linux
// 6.6); before, a mapping could keep stale pages, so Init allows it only from there.
bool WritesDirect(fuse_req_t req, int open_flags) {
  return (open_flags & O_ACCMODE) == O_WRONLY && ContextOf(req).requests.direct_writes();
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  ServeRw(req, FuseOp::kOpen, [&] {
    uint64_t fh = 0;
    bool cacheable = false;
    int err = Wfs(req).Open(ino, fi->flags, &fh, &cacheable, CurrentRequest().drop_suid_sgid);
    Invalidate(req);
    if (err != 0) return ReplyErr(req, "open", err);
    fi->fh = fh;
    fi->keep_cache = cacheable ? 1 : 0;
    fi->noflush = 1;  // see Flush
    fi->direct_io = WritesDirect(req, fi->flags);
    if (fuse_reply_open(req, fi) != 0) Wfs(req).Release(fh);
  });
}

void Read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) noexcept {
  ServeRw(req, FuseOp::kRead, [&] {
    ContextOf(req).requests.NoteReadSize(size);
    if (off < 0) return ReplyErr(req, "read", EINVAL);
    std::string data;
    int err = Wfs(req).Read(fi->fh, static_cast<uint64_t>(off), size, &data);
    if (err != 0) return ReplyErr(req, "read", err);
    fuse_reply_buf(req, data.data(), data.size());
  });
}

void Write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
           fuse_file_info* fi) noexcept {
  ServeRw(req, FuseOp::kWrite, [&] {
    if (off < 0) return ReplyErr(req, "write", EINVAL);
    // Before the data, as the kernel's own file_remove_privs: a write that cannot clear the
    // bits is not made.
    int err = 0;
    if (CurrentRequest().drop_suid_sgid) {
      err = Wfs(req).DropSuidSgid(fi->fh);
      InvalidateAttributes(req);
    }
    if (err != 0) return ReplyErr(req, "write", err);
    size_t written = 0;
    err = Wfs(req).Write(fi->fh, static_cast<uint64_t>(off), buf, size, &written);
    if (err != 0) return ReplyErr(req, "write", err);
    fuse_reply_write(req, written);
  });
}

// Nothing to do at a close(2): writes reach the upper file when they are made (no writeback
// cache) and locks stay in the kernel (no lock operations). So Open and Create set noflush
// (FOPEN_NOFLUSH) and the kernel sends no FLUSH for their files. FLUSH is a forced request:
// while no daemon serves (a takeover's pause, a keeper started again by the service manager,
// fs/fuse/fd_store.h) a close would wait for one, unkillable, and one made by the very process
// that would start that daemon (a descriptor it inherited, closed at its exec) would never end.
// Files opened by a daemon of an older imgfs still send it.
void Flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) noexcept {
  CountRequest(req, FuseOp::kFlush);
  fuse_reply_err(req, 0);
}

void Release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) noexcept {
  ServeRw(req, FuseOp::kRelease, [&] {
    Wfs(req).Release(fi->fh);
    fuse_reply_err(req, 0);
  });
}

void Fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) noexcept {
  ServeRw(req, FuseOp::kFsync, [&] { fuse_reply_err(req, Wfs(req).Fsync(fi->fh, datasync != 0)); });
}

// A directory handle: the merged listing, taken at opendir and again at each rewind. Its
// lock is held while the listing is taken or read into a reply (not across the reply): two
// requests may read one handle at once (seen under TSan across takeovers).
struct DirHandle {
  Mutex mu;
  std::vector<MergedDirEntry> entries IMGFS_GUARDED_BY(mu);
  uint64_t self_ino IMGFS_GUARDED_BY(mu) = 0;
  uint64_t parent_ino IMGFS_GUARDED_BY(mu) = 0;
};

// Open directories by number (fuse_file_info::fh). The kernel keeps the numbers across a
// takeover (fs/fuse/takeover.h), so they are never pointers: a number this daemon does not
// know — one a dead daemon handed out, from the range of its pid — gets a fresh listing the
// first time it is read (names added or removed meanwhile may then be missed or seen twice,
// as POSIX allows for a directory that changes while it is read).
class DirHandles {
 public:
  uint64_t Add(std::shared_ptr<DirHandle> dh) IMGFS_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    const uint64_t fh = next_++;
    handles_.emplace(fh, std::move(dh));
    return fh;
  }
  // The handle `fh`, or a new empty one recorded under it (`*fresh` then set).
  std::shared_ptr<DirHandle> Get(uint64_t fh, bool* fresh) IMGFS_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    auto [it, added] = handles_.try_emplace(fh, nullptr);
    if (added) it->second = std::make_shared<DirHandle>();
    *fresh = added;
    return it->second;
  }
  void Remove(uint64_t fh) IMGFS_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    handles_.erase(fh);
  }

 private:
  Mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<DirHandle>> handles_ IMGFS_GUARDED_BY(mu_);
  // Numbers of this process: its pid in the high half, so a daemon taking over never gives
  // out a number the kernel still holds from a dead one.
  uint64_t next_ IMGFS_GUARDED_BY(mu_) = (static_cast<uint64_t>(getpid()) << 32) + 1;
};

DirHandles& OpenDirs() {
  static DirHandles* dirs = new DirHandles();  // one session per process; never destroyed
  return *dirs;
}

int Snapshot(fuse_req_t req, fuse_ino_t ino, DirHandle* dh) IMGFS_REQUIRES(dh->mu) {
  struct stat st {};
  bool cacheable = false;
  int err = Wfs(req).GetAttr(ino, &st, &cacheable);
  if (err != 0) return err;
  dh->self_ino = st.st_ino;
  return Wfs(req).ReadDir(ino, &dh->entries, &dh->parent_ino);
}

void Opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  ServeRw(req, FuseOp::kOpendir, [&] {
    auto dh = std::make_shared<DirHandle>();
    int err = 0;
    {
      MutexLock lock(&dh->mu);
      err = Snapshot(req, ino, dh.get());
    }
    if (err != 0) return ReplyErr(req, "opendir", err);
    // The kernel's open directory's from here: removed by Releasedir, or below when the
    // opendir was interrupted (the kernel then sends no RELEASEDIR).
    fi->fh = OpenDirs().Add(std::move(dh));
    if (fuse_reply_open(req, fi) != 0) OpenDirs().Remove(fi->fh);
  });
}

// Offsets: 1 = ".", 2 = "..", 3 + i = the i-th name of the snapshot. With `plus` each name
// but "." and ".." comes with its entry (a lookup the kernel counts; a name gone since the
// snapshot comes without, as libfuse allows), so `rm -rf`, `ls -l` and `find` send no LOOKUP
// per name.
void DoReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus) {
  bool fresh = false;
  std::shared_ptr<DirHandle> dh = OpenDirs().Get(fi->fh, &fresh);
  std::string buf(size, '\0');
  size_t used = 0;
  std::vector<uint64_t> counted;  // the lookups the reply gives the kernel
  int err = 0;
  {
    MutexLock lock(&dh->mu);
    if (off == 0 || fresh) err = Snapshot(req, ino, dh.get());
    for (uint64_t pos = static_cast<uint64_t>(off); err == 0 && pos < dh->entries.size() + 2;
         ++pos) {
      struct stat st {};
      std::string name;
      if (pos == 0) {
        name = ".";
        st.st_ino = dh->self_ino;
        st.st_mode = S_IFDIR;
      } else if (pos == 1) {
        name = "..";
        st.st_ino = dh->parent_ino;
        st.st_mode = S_IFDIR;
      } else {
        const MergedDirEntry& e = dh->entries[pos - 2];
        name = e.name;
        st.st_ino = e.st_ino;
        st.st_mode = e.type;
      }
      const off_t next = static_cast<off_t>(pos + 1);
      size_t n = 0;
      if (!plus) {
        n = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st, next);
      } else {
        fuse_entry_param e{};  // ino 0: no entry, only the name (and no lookup counted)
        e.attr = st;
        Entry entry;
        const bool found = pos >= 2 && Wfs(req).LookupListed(ino, name, &entry) == 0;
        if (found) e = EntryParamFor(entry);
        n = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e, next);
        if (found && n > size - used) Wfs(req).Forget(entry.id, 1);  // not in this reply
        if (found && n <= size - used) counted.push_back(entry.id);
      }
      if (n > size - used) break;
      used += n;
    }
  }
  if (err != 0) return ReplyErr(req, plus ? "readdirplus" : "readdir", err);
  if (fuse_reply_buf(req, buf.data(), used) != 0) {  // interrupted: the kernel counted none
    for (uint64_t id : counted) Wfs(req).Forget(id, 1);
  }
}

void Readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept {
  ServeRw(req, FuseOp::kReaddir, [&] { DoReaddir(req, ino, size, off, fi, /*plus=*/false); });
}

void Readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                 fuse_file_info* fi) noexcept {
  ServeRw(req, FuseOp::kReaddirplus, [&] { DoReaddir(req, ino, size, off, fi, /*plus=*/true); });
}

void Releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) noexcept {
  CountRequest(req, FuseOp::kReleasedir);
  OpenDirs().Remove(fi->fh);
  fuse_reply_err(req, 0);
}

void Fsyncdir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) noexcept {
  CountRequest(req, FuseOp::kFsyncdir);
  fuse_reply_err(req, 0);
}

void Statfs(fuse_req_t req, fuse_ino_t) noexcept {
  ServeRw(req, FuseOp::kStatfs, [&] {
    struct statvfs st {};
    int err = Wfs(req).StatFs(&st);
    if (err != 0) return ReplyErr(req, "statfs", err);
    fuse_reply_statfs(req, &st);
  });
}

void Setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
              int flags) noexcept {
  ServeRw(req, FuseOp::kSetxattr, [&] {
    int err = Wfs(req).SetXattr(ino, name, std::string_view(value, size), flags);
    Invalidate(req);
    fuse_reply_err(req, err);
  });
}

void Getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
  ServeRw(req, FuseOp::kGetxattr, [&] {
    std::string value;
    int err = Wfs(req).GetXattr(ino, name, &value);
    if (err != 0) {
      fuse_reply_err(req, err);
      return;
    }
    ReplyXattr(req, value, size);
  });
}

void Listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept {
  ServeRw(req, FuseOp::kListxattr, [&] {
    std::vector<std::string> names;
    int err = Wfs(req).ListXattr(ino, &names);
    if (err != 0) return ReplyErr(req, "listxattr", err);
    std::string list;
    for (const std::string& n : names) {
      list += n;
      list.push_back('\0');
    }
    ReplyXattr(req, list, size);
  });
}

void Removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept {
  ServeRw(req, FuseOp::kRemovexattr, [&] {
    int err = Wfs(req).RemoveXattr(ino, name);
    Invalidate(req);
    fuse_reply_err(req, err);
  });
}

void Access(fuse_req_t req, fuse_ino_t ino, int) noexcept {
  ServeRw(req, FuseOp::kAccess, [&] {
    // Permission bits are checked by the kernel (default_permissions).
    struct stat st {};
    bool cacheable = false;
    fuse_reply_err(req, Wfs(req).GetAttr(ino, &st, &cacheable));
  });
}

void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
            fuse_file_info* fi) noexcept {
  ServeRw(req, FuseOp::kCreate, [&] {
    Entry entry;
    uint64_t fh = 0;
    int err = Wfs(req).Create(parent, name, mode, fi->flags, CallerOf(req), &entry, &fh,
                              CurrentRequest().drop_suid_sgid);
    Invalidate(req);
    if (err != 0) return ReplyErr(req, "create", err);
    fi->fh = fh;
    fi->keep_cache = entry.cacheable ? 1 : 0;
    fi->noflush = 1;  // see Flush
    fi->direct_io = WritesDirect(req, fi->flags);
    const fuse_entry_param e = EntryParamFor(entry);
    if (fuse_reply_create(req, &e, fi) != 0) {  // interrupted: neither handle nor lookup taken
      Wfs(req).Release(fh);
      Wfs(req).Forget(entry.id, 1);
    }
  });
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  // In the order of struct fuse_lowlevel_ops.
  ops.init = Init;
  ops.lookup = Lookup;
  ops.forget = Forget;
  ops.getattr = Getattr;
  ops.setattr = Setattr;
  ops.readlink = Readlink;
  ops.mknod = Mknod;
  ops.mkdir = Mkdir;
  ops.unlink = Unlink;
  ops.rmdir = Rmdir;
  ops.symlink = Symlink;
  ops.rename = Rename;
  ops.link = Link;
  ops.open = Open;
  ops.read = Read;
  ops.write = Write;
  ops.flush = Flush;
  ops.release = Release;
  ops.fsync = Fsync;
  ops.opendir = Opendir;
  ops.readdir = Readdir;
  ops.readdirplus = Readdirplus;
  ops.releasedir = Releasedir;
  ops.fsyncdir = Fsyncdir;
  ops.statfs = Statfs;
  ops.setxattr = Setxattr;
  ops.getxattr = Getxattr;
  ops.listxattr = Listxattr;
  ops.removexattr = Removexattr;
  ops.access = Access;
  ops.create = Create;
  ops.forget_multi = ForgetMulti;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& WritableFilesystemOps() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

}  // namespace imgfs::fs
