// imgfs — WritableFs: file handles, directory listings, statfs and xattrs.
#include "fs/writable/writable_fs_internal.h"

namespace imgfs::fs {

using namespace writable_internal;  // this module's own helpers

// ---- files -----------------------------------------------------------------------------

std::shared_ptr<WritableFs::Handle> WritableFs::GetHandle(uint64_t fh) const {
  MutexLock lock(&handles_mu_);
  auto it = handles_.find(fh);
  return it == handles_.end() ? nullptr : it->second;
}

int WritableFs::Open(uint64_t id, int flags, uint64_t* fh, bool* cacheable, bool drop_suid_sgid) {
  int r = OpenHandle(id, flags, fh, cacheable);
  if (r != 0 || !drop_suid_sgid) return r;
  r = DropSuidSgid(*fh);
  if (r != 0) Release(*fh);  // the kernel gets no handle
  return r;
}

int WritableFs::OpenHandle(uint64_t id, int flags, uint64_t* fh, bool* cacheable) {
  if (int r = JournalRoom(false); r != 0) return r;  // a copy-up asks for more (CopyUpPath)
  if (std::optional<WritableJournal::RequestRecord> rec = Resent();
      rec && rec->fh != 0 && GetHandle(rec->fh) != nullptr) {
    // Opened before a takeover (the handle restored from the journal): that handle.
    MutexLock lock(&mu_);
    Node* node = GetNode(id);
    *fh = rec->fh;
    *cacheable = node != nullptr && Cacheable(node);
    return 0;
  }
  const bool write = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0;
  const bool with_data = (flags & O_TRUNC) == 0;
  PreparedData prepared = write && with_data ? PrepareData(id) : PreparedData();
  auto handle = std::make_shared<Handle>();
  {
    MutexLock lock(&mu_);
    MutexLock hl(&handle->mu);  // not shared yet; held for the lock analysis (order: mu_, then it)
    Node* node = GetNode(id);
    if (node == nullptr || node->deleted) return ENOENT;
    if (S_ISDIR(node->state.type)) return EISDIR;
    if (write) {
      int r = CopyUp(node, with_data, &prepared);
      if (r != 0) return r;
    }
    handle->id = id;
    handle->writable = (flags & O_ACCMODE) != O_RDONLY;
    if (node->state.upper) {
      int open_flags = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT)) | O_CLOEXEC;
      handle->fd = UniqueFd(OpenBeneath(upper_fd_.get(), PathOf(node), open_flags));
      if (!handle->fd.IsValid()) return Errno();
    } else {
      handle->lower = node->state.lower;
      handle->copy_ups_seen = copy_ups_.load(std::memory_order_acquire);
    }
    *cacheable = Cacheable(node);
  }
  MutexLock lock(&handles_mu_);
  *fh = next_fh_++;
  Journaled(journal_->Opened(*fh, id, flags, handle->lower, CurrentRequest().unique));
  handles_.emplace(*fh, std::move(handle));
  return 0;
}

int WritableFs::Create(uint64_t parent, std::string_view name, mode_t mode, int flags,
                       const Caller& caller, Entry* out, uint64_t* fh, bool drop_suid_sgid) {
  if (int r = JournalRoom(true); r != 0) return r;
  const std::optional<WritableJournal::RequestRecord> rec = Resent();
  // Sent again after a takeover, journaled as started (JournalStarted) but not answered: a
  // name that exists now was made by the dead daemon, even under O_EXCL.
  const bool started = rec && rec->id == 0 && rec->fh == 0;
  if (rec && rec->id != 0) {
    // Done before a takeover: its entry, and its handle (or, when the daemon died before
    // opening it, one opened now without creating or truncating again).
    int r = -1;
    {
      MutexLock lock(&mu_);
      r = AnswerResent(rec->id, out);
    }
    if (r > 0) return r;
    if (r == 0) {
      bool cacheable = true;
      if (rec->fh != 0 && GetHandle(rec->fh) != nullptr) {
        *fh = rec->fh;
      } else {
        r = Open(out->id, flags & ~(O_CREAT | O_EXCL | O_TRUNC), fh, &cacheable);
      }
      // The dead daemon may have died between the truncation and clearing the bits (a file
      // it made itself then loses them too: the safe side of a rare race).
      if (r == 0 && drop_suid_sgid) {
        r = DropSuidSgid(*fh);
        struct stat st {};
        bool fresh = false;
        if (r == 0 && GetAttr(out->id, &st, &fresh) == 0) out->attr = st;
        if (r != 0) Release(*fh);  // the kernel gets no handle
      }
      if (r != 0) {
        Forget(out->id, 1);  // the kernel never gets the id the dead daemon counted
        return r;
      }
      out->cacheable = out->cacheable && cacheable;
      return 0;
    }
  }
  auto handle = std::make_shared<Handle>();
  bool exists = false;
  {
    MutexLock lock(&mu_);
    MutexLock hl(&handle->mu);  // not shared yet; held for the lock analysis (order: mu_, then it)
    CreateSite site;
    int r = PrepareCreate(parent, name, &site);
    // open(O_CREAT) without O_EXCL of a name that exists opens it, as POSIX says (the
    // kernel's entry was stale).
    exists = r == EEXIST && ((flags & O_EXCL) == 0 || started);
    if (r != 0 && !exists) return r;
    if (exists && started) {
      // The dead daemon may have died before it set the owner and mode.
      Node* dir = GetNode(parent);
      if (dir == nullptr) return ENOENT;
      r = SetNewOwnerAgain(PathOf(dir), name, caller, S_IFREG, (mode & 07777) | S_IFREG);
      if (r != 0) return r;
    }
    if (!exists) {
      const int at = site.at;
      const std::string& nm = site.name_at;
      JournalStarted();
      int open_flags = (flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_DIRECT)) | O_CREAT |
                       O_EXCL | O_CLOEXEC;
      handle->fd = UniqueFd(OpenBeneath(at, nm, open_flags, 0600));
      if (!handle->fd.IsValid()) return Errno();
      mode_t m = (mode & 07777) | S_IFREG;
      r = SetNewOwner(at, nm.c_str(), upper_fd_.get(), site.dir_path, caller, S_IFREG, &m);
      if (r != 0) {
        UnlinkBeneath(at, nm, 0);
        return r;
      }
      r = FinishCreate(site, name, S_IFREG | m, out);
      if (r != 0) return r;
      handle->id = out->id;
      handle->writable = (flags & O_ACCMODE) != O_RDONLY;
    }
  }
  if (exists) {
    int r = Lookup(parent, name, out);
    if (r != 0) return r;
    if (S_ISDIR(out->attr.st_mode)) {
      Forget(out->id, 1);
      return EISDIR;
    }
    bool cacheable = false;
    r = Open(out->id, flags & ~(O_CREAT | O_EXCL), fh, &cacheable, drop_suid_sgid);
    if (r != 0) {
      Forget(out->id, 1);
      return r;
    }
    out->cacheable = out->cacheable && cacheable;
    struct stat st {};
    if (GetAttr(out->id, &st, &cacheable) == 0) out->attr = st;  // after an O_TRUNC
    return 0;
  }
  MutexLock lock(&handles_mu_);
  *fh = next_fh_++;
  Journaled(journal_->Opened(*fh, handle->id, flags, 0, CurrentRequest().unique));
  handles_.emplace(*fh, std::move(handle));
  return 0;
}

int WritableFs::Read(uint64_t fh, uint64_t offset, size_t size, std::string* out) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return EBADF;
  int fd = -1;
  uint32_t lower = 0;
  bool check_upper = false;
  {
    MutexLock hl(&h->mu);
    fd = h->fd.get();
    lower = h->lower;
    uint64_t now = copy_ups_.load(std::memory_order_acquire);
    check_upper = fd < 0 && now != h->copy_ups_seen;
    h->copy_ups_seen = now;
  }
  if (check_upper) {
    // Opened while the file was in the lower: once it has been copied up (through another
    // handle), read the copy, which may have changed.
    UniqueFd opened;
    {
      MutexLock lock(&mu_);
      Node* node = GetNode(h->id);
      if (node != nullptr && !node->deleted && node->state.upper) {
        opened = UniqueFd(OpenBeneath(upper_fd_.get(), PathOf(node), O_RDONLY | O_CLOEXEC));
      }
    }
    if (opened.IsValid()) {
      MutexLock hl(&h->mu);
      if (!h->fd.IsValid()) h->fd = std::move(opened);
      fd = h->fd.get();
    }
  }
  if (fd >= 0) {
    out->resize(size);
    ssize_t n;
    do {
      n = pread(fd, out->data(), size, static_cast<off_t>(offset));
    } while (n < 0 && errno == EINTR);
    if (n < 0) return Errno();
    out->resize(static_cast<size_t>(n));
    return 0;
  }
  Result<std::string> data = lower_->Read(lower, offset, size);
  if (!data.has_value()) return EIO;
  *out = std::move(*data);
  return 0;
}

int WritableFs::Write(uint64_t fh, uint64_t offset, const char* data, size_t size,
                      size_t* written) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return EBADF;
  int fd;
  {
    MutexLock hl(&h->mu);
    fd = h->writable ? h->fd.get() : -1;
  }
  if (fd < 0) return EBADF;
  ssize_t n;
  do {
    n = pwrite(fd, data, size, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Errno();
  *written = static_cast<size_t>(n);
  return 0;
}

int WritableFs::Fsync(uint64_t fh, bool datasync) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return EBADF;
  MutexLock hl(&h->mu);
  if (!h->fd.IsValid()) return 0;
  int rc = datasync ? fdatasync(h->fd.get()) : fsync(h->fd.get());
  return rc == 0 ? 0 : Errno();
}

int WritableFs::DropSuidSgid(uint64_t fh) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return EBADF;
  MutexLock hl(&h->mu);
  if (!h->fd.IsValid()) return 0;
  bool dropped = false;
  if (DropSuidSgidFd(h->fd.get(), &dropped) != 0) return Errno();
  // The kernel may hold the mode from before for long (an open or a write returns none).
  if (dropped) pending_invalidations.push_back(h->id);
  return 0;
}

void WritableFs::Release(uint64_t fh) {
  std::shared_ptr<Handle> h;
  {
    MutexLock lock(&handles_mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return;
    h = std::move(it->second);
    handles_.erase(it);
    Journaled(journal_->Released(fh));
  }
  DropOrphan(h->id);
}

bool WritableFs::HasHandles(uint64_t id) const {
  MutexLock lock(&handles_mu_);
  for (const auto& [fh, h] : handles_) {
    if (h->id == id) return true;
  }
  return false;
}

int WritableFs::KeepOrphan(Node* node, const std::string& path) {
  const std::string name = WritableJournal::OrphanName(node->id);
  if (RenameBeneath(upper_fd_.get(), path, work_fd_.get(), name) != 0) return Errno();
  struct stat st {};
  OpenOrphan(node, &st);
  node->orphan_in_work = true;  // it is there, whether or not it could be opened
  Journaled(journal_->Orphan(node->id, true));
  return 0;
}

bool WritableFs::OpenOrphan(Node* node, struct stat* st) {
  node->orphan = UniqueFd(openat(work_fd_.get(), WritableJournal::OrphanName(node->id).c_str(),
                                 O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!node->orphan.IsValid() || fstat(node->orphan.get(), st) != 0 || !S_ISREG(st->st_mode)) {
    node->orphan.Close();
    return false;
  }
  ++work_links_[st->st_ino];
  return true;
}

void WritableFs::WorkLinkGone(ino_t upper_ino) {
  if (auto it = work_links_.find(upper_ino); it != work_links_.end() && --it->second == 0) {
    work_links_.erase(it);
  }
}

void WritableFs::ReturnOrphan(Node* node, const std::string& path) {
  if (RenameBeneath(work_fd_.get(), WritableJournal::OrphanName(node->id), upper_fd_.get(), path) !=
      0) {
    return;  // it stays an orphan, removed at the last release
  }
  node->orphan_in_work = false;
  Journaled(journal_->Orphan(node->id, false));
  struct stat st {};
  if (!node->orphan.IsValid() || fstat(node->orphan.get(), &st) != 0) return;
  WorkLinkGone(st.st_ino);
}

void WritableFs::DropOrphan(uint64_t id) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr || !node->orphan_in_work || HasHandles(id)) return;
  struct stat st {};
  const bool known = node->orphan.IsValid() && fstat(node->orphan.get(), &st) == 0;
  if (unlinkat(work_fd_.get(), WritableJournal::OrphanName(id).c_str(), 0) != 0 &&
      errno != ENOENT) {
    IMGFS_LOG(kWarning) << "removing the data of a deleted file: " << strerror(errno);
    return;
  }
  node->orphan_in_work = false;
  Journaled(journal_->Orphan(id, false));
  if (!known) return;
  WorkLinkGone(st.st_ino);
  if (st.st_nlink <= 1) ForgetUpperIno(st.st_ino);  // its last name
}

int WritableFs::ReadDir(uint64_t id, std::vector<MergedDirEntry>* out, uint64_t* parent_st_ino) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr) return ENOENT;
  if (!S_ISDIR(node->state.type)) return ENOTDIR;
  if (node->deleted) {
    out->clear();
    *parent_st_ino = node->last.st_ino;
    return 0;
  }
  int r = Merged(node->state, PathOf(node), out);
  if (r != 0) return r;
  Node* parent = node->parent != nullptr ? node->parent : node;
  struct stat st {};
  *parent_st_ino = StatNode(parent, &st) == 0 ? st.st_ino : 1;
  return 0;
}

int WritableFs::StatFs(struct statvfs* out) {
  return fstatvfs(upper_fd_.get(), out) == 0 ? 0 : Errno();
}

// ---- xattrs ----------------------------------------------------------------------------

int WritableFs::SetXattr(uint64_t id, std::string_view name, std::string_view value, int flags) {
  if (int r = JournalRoom(true); r != 0) return r;
  if (IsOverlayXattr(name)) return EPERM;
  PreparedData prepared = PrepareData(id);
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr || node->deleted) return ENOENT;
  int r = CopyUp(node, true, &prepared);
  if (r != 0) return r;
  return SetXattrBeneath(upper_fd_.get(), PathOf(node), std::string(name), value, flags);
}

int WritableFs::GetXattr(uint64_t id, std::string_view name, std::string* value) {
  if (IsOverlayXattr(name)) return ENODATA;
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr) return ENOENT;
  if (node->deleted && !node->orphan.IsValid()) return ENODATA;
  if (node->state.upper) {
    if (node->deleted) return GetXattrFd(node->orphan.get(), std::string(name), value);
    return GetXattrBeneath(upper_fd_.get(), PathOf(node), std::string(name), value);
  }
  Result<std::string_view> v = table_.GetXattr(node->state.lower, name);
  if (!v.has_value()) return v.error().code() == StatusCode::kNotFound ? ENODATA : EIO;
  *value = std::string(*v);
  return 0;
}

int WritableFs::ListXattr(uint64_t id, std::vector<std::string>* names) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr) return ENOENT;
  names->clear();
  if (node->deleted) return 0;
  if (node->state.upper) {
    std::vector<std::string> all;
    ListXattrsBeneath(upper_fd_.get(), PathOf(node), &all);
    for (std::string& n : all) {
      if (!IsOverlayXattr(n)) names->push_back(std::move(n));
    }
    return 0;
  }
  Result<std::vector<std::string_view>> list = table_.ListXattr(node->state.lower);
  if (!list.has_value()) return EIO;
  for (std::string_view n : *list) {
    if (!IsOverlayXattr(n)) names->emplace_back(n);
  }
  return 0;
}

int WritableFs::RemoveXattr(uint64_t id, std::string_view name) {
  if (int r = JournalRoom(false); r != 0) return r;
  if (IsOverlayXattr(name)) return ENODATA;
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr || node->deleted) return ENOENT;
  if (!node->state.upper && !table_.GetXattr(node->state.lower, name).has_value()) {
    return ENODATA;
  }
  int r = CopyUp(node, true);
  if (r != 0) return r;
  return RemoveXattrBeneath(upper_fd_.get(), PathOf(node), std::string(name));
}

size_t WritableFs::node_count() const {
  MutexLock lock(&mu_);
  return nodes_.size();
}

uint64_t WritableFs::lookup_count(uint64_t id) const {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  return node == nullptr ? 0 : node->lookups;
}

uint64_t WritableFs::shown_ino(ino_t upper_ino) const {
  MutexLock lock(&mu_);
  auto it = upper_inos_.find(upper_ino);
  return it == upper_inos_.end() ? 0 : it->second;
}

std::map<uint64_t, uint64_t> WritableFs::handle_ids() const {
  MutexLock lock(&handles_mu_);
  std::map<uint64_t, uint64_t> out;
  for (const auto& [fh, h] : handles_) out.emplace(fh, h->id);
  return out;
}

}  // namespace imgfs::fs
