// imgfs — WritableFs: name operations (lookup, attributes, create, unlink, rename, link).
#include "fs/writable/writable_fs_internal.h"

namespace imgfs::fs {

using namespace writable_internal;  // this module's own helpers

// ---- name operations -------------------------------------------------------------------

int WritableFs::Lookup(uint64_t parent, std::string_view name, Entry* out) {
  if (int r = JournalRoom(false); r != 0) return r;
  MutexLock lock(&mu_);
  if (const int answered = AnswerIfResent(parent, name, out); answered >= 0) return answered;
  return LookupChild(parent, name, out, /*listed=*/false);
}

int WritableFs::LookupListed(uint64_t parent, std::string_view name, Entry* out) {
  if (int r = JournalRoom(false); r != 0) return r;
  MutexLock lock(&mu_);
  return LookupChild(parent, name, out, /*listed=*/true);
}

int WritableFs::LookupChild(uint64_t parent, std::string_view name, Entry* out, bool listed) {
  Node* dir = GetNode(parent);
  if (dir == nullptr || dir->deleted) return ENOENT;
  State st;
  int r = ResolveChild(dir->state, PathOf(dir), name, &st);
  if (r != 0) return r;
  return MakeEntry(dir, name, st, out, /*created=*/false, listed);
}

void WritableFs::Forget(uint64_t id, uint64_t nlookup) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr || id == 1) return;
  node->lookups -= std::min(node->lookups, nlookup);
  Journaled(journal_->Forget(id, nlookup));
  if (node->lookups == 0) {
    if (node->deleted) {
      nodes_.erase(id);
    } else {
      MaybeErase(node);
    }
  }
}

int WritableFs::GetAttr(uint64_t id, struct stat* out, bool* cacheable) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr) return ENOENT;
  int r = StatNode(node, out);
  if (cacheable != nullptr) *cacheable = Cacheable(node);
  return r;
}

int WritableFs::SetAttr(uint64_t id, const SetAttrRequest& req, uint64_t fh, struct stat* out,
                        bool* cacheable) {
  if (int r = JournalRoom(false); r != 0) return r;
  if (cacheable != nullptr) *cacheable = false;
  std::shared_ptr<Handle> handle = fh != 0 ? GetHandle(fh) : nullptr;
  const bool with_data = !(req.set_size && req.size == 0);
  PreparedData prepared = with_data ? PrepareData(id) : PreparedData();
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr) return ENOENT;
  // A symlink's mode means nothing; overlayfs answers EOPNOTSUPP and so do we (a chmod that
  // reached the link's target would change a host file as root). Before any copy-up.
  if (req.set_mode && S_ISLNK(node->state.type)) return EOPNOTSUPP;
  int fd = -1;
  if (handle != nullptr && handle->id == id) {
    MutexLock hl(&handle->mu);
    fd = handle->fd.get();
  }
  if (node->deleted) {
    if (fd < 0) return ENOENT;
  } else {
    int r = CopyUp(node, with_data, &prepared);
    if (r != 0) return r;
  }
  std::string path = node->deleted ? "" : PathOf(node);
  if (req.set_uid || req.set_gid) {
    uid_t uid = req.set_uid ? req.uid : static_cast<uid_t>(-1);
    gid_t gid = req.set_gid ? req.gid : static_cast<gid_t>(-1);
    int rc = node->deleted ? fchown(fd, uid, gid) : ChownBeneath(upper_fd_.get(), path, uid, gid);
    if (rc != 0) return Errno();
  }
  if (req.set_mode) {
    int rc = node->deleted ? fchmod(fd, req.mode & 07777)
                           : ChmodBeneath(upper_fd_.get(), path, req.mode & 07777);
    if (rc != 0) return Errno();
  }
  if (req.set_size) {
    int rc = 0;
    if (fd >= 0 && handle->writable) {
      rc = ftruncate(fd, req.size);
    } else if (node->deleted) {
      return EBADF;
    } else {
      rc = TruncateBeneath(upper_fd_.get(), path, req.size);
    }
    if (rc != 0) return Errno();
  }
  if (req.drop_suid_sgid) {
    int rc = node->deleted ? DropSuidSgidFd(fd) : DropSuidSgidBeneath(upper_fd_.get(), path);
    if (rc != 0) return Errno();
  }
  if (req.set_atime || req.set_mtime) {
    struct timespec times[2];
    times[0].tv_sec = 0;
    times[0].tv_nsec = !req.set_atime ? UTIME_OMIT : req.atime_now ? UTIME_NOW : 0;
    if (req.set_atime && !req.atime_now) times[0] = req.atime;
    times[1].tv_sec = 0;
    times[1].tv_nsec = !req.set_mtime ? UTIME_OMIT : req.mtime_now ? UTIME_NOW : 0;
    if (req.set_mtime && !req.mtime_now) times[1] = req.mtime;
    int rc = node->deleted ? futimens(fd, times) : UtimensBeneath(upper_fd_.get(), path, times);
    if (rc != 0) return Errno();
  }
  if (node->deleted) {
    if (fstat(fd, out) != 0) return Errno();
    ShowUpper(out, node->state.origin);
    return 0;
  }
  int r = StatNode(node, out);
  if (r == 0 && cacheable != nullptr) *cacheable = Cacheable(node);
  return r;
}

int WritableFs::ReadLink(uint64_t id, std::string* target) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr || node->deleted) return ENOENT;
  if (!S_ISLNK(node->state.type)) return EINVAL;
  if (!node->state.upper) {
    Result<std::string_view> t = table_.ReadLink(node->state.lower);
    if (!t.has_value()) return EIO;
    *target = std::string(*t);
    return 0;
  }
  char buf[PATH_MAX + 1];
  ssize_t n = ReadlinkBeneath(upper_fd_.get(), PathOf(node), buf, sizeof(buf));
  if (n < 0) return Errno();
  target->assign(buf, static_cast<size_t>(n));
  return 0;
}

int WritableFs::ParentForCreate(uint64_t parent, std::string_view name, Node** dir,
                                State* dir_state, bool* over_whiteout) {
  *dir = GetNode(parent);
  if (*dir == nullptr || (*dir)->deleted) return ENOENT;
  if (!S_ISDIR((*dir)->state.type)) return ENOTDIR;
  if (name.size() > NAME_MAX) return ENAMETOOLONG;
  std::string dir_path = PathOf(*dir);
  State child;
  int r = ResolveChild((*dir)->state, dir_path, name, &child);
  if (r == 0) return EEXIST;
  if (r != ENOENT) return r;
  r = EnsureUpperDirOf(*dir);
  if (r != 0) return r;
  *dir_state = (*dir)->state;
  struct stat st {};
  *over_whiteout = StatBeneath(upper_fd_.get(), Join(dir_path, name), &st) == 0;
  return 0;
}

// Ownership and mode of a just created entry `nm` in `dir_fd` (the mode is set exactly: the
// kernel already applied the caller's umask). A setgid parent passes on its group (and, to
// directories, the setgid bit), as POSIX filesystems do.
int writable_internal::SetNewOwner(int dir_fd, const char* nm, int parent_fd,
                                   const std::string& parent_path, const Caller& caller,
                                   mode_t type, mode_t* mode) {
  struct stat pst {};
  gid_t gid = caller.gid;
  if (StatBeneath(parent_fd, parent_path, &pst) == 0 && (pst.st_mode & S_ISGID) != 0) {
    gid = pst.st_gid;
    if (S_ISDIR(type)) *mode |= S_ISGID;
  }
  if (ChownBeneath(dir_fd, nm, caller.uid, gid) != 0 && geteuid() == 0) {
    return Errno();
  }
  if (!S_ISLNK(type) && ChmodBeneath(dir_fd, nm, *mode & 07777) != 0) return Errno();
  return 0;
}

int WritableFs::PrepareCreate(uint64_t parent, std::string_view name, CreateSite* site) {
  State dir_state;
  int r = ParentForCreate(parent, name, &site->dir, &dir_state, &site->over_whiteout);
  if (r != 0) return r;
  site->dir_path = PathOf(site->dir);
  if (site->over_whiteout) {
    site->tmp = TempName();
    site->at = work_fd_.get();
    site->name_at = site->tmp;
  } else {
    site->at = upper_fd_.get();
    site->name_at = Join(site->dir_path, name);
  }
  return 0;
}

int WritableFs::FinishCreate(const CreateSite& site, std::string_view name, mode_t mode,
                             Entry* out) {
  Node* dir = site.dir;
  std::string path = Join(site.dir_path, name);
  if (site.over_whiteout) {
    int r = PlaceFromWork(site.tmp, path);
    if (r != 0) {
      RemoveTreeAt(work_fd_.get(), site.tmp).ok();
      return r;
    }
  }
  State st;
  st.upper = true;
  st.type = mode & S_IFMT;
  if (Node* old = FindNode(path); old != nullptr) Detach(old);
  return MakeEntry(dir, name, st, out, /*created=*/true);
}

int WritableFs::Mknod(uint64_t parent, std::string_view name, mode_t mode, dev_t rdev,
                      const Caller& caller, Entry* out) {
  if (int r = JournalRoom(true); r != 0) return r;
  MutexLock lock(&mu_);
  if (const int answered = AnswerIfResent(parent, name, out, &caller, mode); answered >= 0) {
    return answered;
  }
  CreateSite site;
  int r = PrepareCreate(parent, name, &site);
  if (r != 0) return r;
  const int at = site.at;
  const std::string& nm = site.name_at;
  JournalStarted();
  if (S_ISREG(mode)) {
    int fd = OpenBeneath(at, nm, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) return Errno();
    close(fd);
  } else if (MknodBeneath(at, nm, (mode & S_IFMT) | 0600, rdev) != 0) {
    return Errno();
  }
  mode_t m = mode;
  r = SetNewOwner(at, nm.c_str(), upper_fd_.get(), site.dir_path, caller, mode & S_IFMT, &m);
  if (r != 0) {
    UnlinkBeneath(at, nm, 0);
    return r;
  }
  return FinishCreate(site, name, mode, out);
}

int WritableFs::Mkdir(uint64_t parent, std::string_view name, mode_t mode, const Caller& caller,
                      Entry* out) {
  if (int r = JournalRoom(true); r != 0) return r;
  MutexLock lock(&mu_);
  if (const int answered = AnswerIfResent(parent, name, out, &caller, (mode & 07777) | S_IFDIR);
      answered >= 0) {
    return answered;
  }
  CreateSite site;
  int r = PrepareCreate(parent, name, &site);
  if (r != 0) return r;
  const int at = site.at;
  const std::string& nm = site.name_at;
  JournalStarted();
  if (MkdirBeneath(at, nm, 0700) != 0) return Errno();
  mode_t m = (mode & 07777) | S_IFDIR;
  r = SetNewOwner(at, nm.c_str(), upper_fd_.get(), site.dir_path, caller, S_IFDIR, &m);
  if (r == 0 && site.over_whiteout) {
    // Created over a whiteout: whatever the lower had there stays hidden.
    r = SetOpaqueBeneath(work_fd_.get(), site.tmp);
  }
  if (r != 0) {
    UnlinkBeneath(at, nm, AT_REMOVEDIR);
    return r;
  }
  return FinishCreate(site, name, S_IFDIR | m, out);
}

int WritableFs::Symlink(std::string_view target, uint64_t parent, std::string_view name,
                        const Caller& caller, Entry* out) {
  if (int r = JournalRoom(true); r != 0) return r;
  MutexLock lock(&mu_);
  if (const int answered = AnswerIfResent(parent, name, out, &caller, S_IFLNK | 0777);
      answered >= 0) {
    return answered;
  }
  CreateSite site;
  int r = PrepareCreate(parent, name, &site);
  if (r != 0) return r;
  const int at = site.at;
  const std::string& nm = site.name_at;
  JournalStarted();
  if (SymlinkBeneath(std::string(target), at, nm) != 0) return Errno();
  mode_t m = S_IFLNK | 0777;
  r = SetNewOwner(at, nm.c_str(), upper_fd_.get(), site.dir_path, caller, S_IFLNK, &m);
  if (r != 0) {
    UnlinkBeneath(at, nm, 0);
    return r;
  }
  return FinishCreate(site, name, S_IFLNK, out);
}

int WritableFs::Unlink(uint64_t parent, std::string_view name) {
  if (int r = JournalRoom(false); r != 0) return r;
  if (Resent().has_value()) return 0;  // done before a takeover (the header says)
  MutexLock lock(&mu_);
  Node* dir = GetNode(parent);
  if (dir == nullptr || dir->deleted) return ENOENT;
  std::string dir_path = PathOf(dir);
  State st;
  int r = ResolveChild(dir->state, dir_path, name, &st);
  if (GoneBeforeJournaled(r)) {
    Removed(dir, FindNode(Join(dir_path, name)));
    return 0;
  }
  if (r != 0) return r;
  if (S_ISDIR(st.type)) return EISDIR;
  bool need_whiteout = LowerHas(dir->state, name, nullptr);
  std::string path = Join(dir_path, name);
  Node* node = FindNode(path);
  const fs::Node* ln = st.upper ? nullptr : table_.Get(st.lower);
  if (ln != nullptr && ln->type == EntryType::kRegular && ln->nlink > 1) {
    // One name of a lower hardlink group: copy the group up first, so the names that stay
    // are one upper inode whose link count drops (overlayfs' index does the same).
    r = CopyUpPath(path, st, true);
    if (r != 0) return r;
    st.upper = true;
  }
  if (st.upper) {
    struct stat ust {};
    if (StatBeneath(upper_fd_.get(), path, &ust) != 0) return Errno();
    if (node != nullptr) {
      StatNode(node, &node->last);
      node->orphan = UniqueFd(OpenBeneath(upper_fd_.get(), path, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    }
    if (node != nullptr && S_ISREG(ust.st_mode) && HasHandles(node->id)) {
      // Open: the name goes on living in the work directory, where a daemon taking the mount
      // over finds its data again (also with other names: they need not stay).
      r = KeepOrphan(node, path);
      if (r == 0 && need_whiteout) r = MakeWhiteout(path, false);
    } else {
      r = need_whiteout ? MakeWhiteout(path, true)
                        : (UnlinkBeneath(upper_fd_.get(), path, 0) == 0 ? 0 : Errno());
    }
    if (r != 0) {
      if (node != nullptr) node->orphan.Close();
      return r;
    }
    if (ust.st_nlink <= 1 && (node == nullptr || !node->orphan.IsValid())) {
      ForgetUpperIno(ust.st_ino);
    }
  } else {
    if (node != nullptr) StatNode(node, &node->last);
    r = EnsureUpperDirOf(dir);
    if (r != 0) return r;
    r = MakeWhiteout(path, false);
    if (r != 0) return r;
  }
  Removed(dir, FindNode(path));
  return 0;
}

void WritableFs::Removed(Node* dir, Node* node) {
  dir->state.upper = true;
  Detach(node);
  JournalDone();
}

int WritableFs::Rmdir(uint64_t parent, std::string_view name) {
  if (int r = JournalRoom(false); r != 0) return r;
  if (Resent().has_value()) return 0;
  MutexLock lock(&mu_);
  Node* dir = GetNode(parent);
  if (dir == nullptr || dir->deleted) return ENOENT;
  std::string dir_path = PathOf(dir);
  State st;
  int r = ResolveChild(dir->state, dir_path, name, &st);
  if (GoneBeforeJournaled(r)) {
    Removed(dir, FindNode(Join(dir_path, name)));
    return 0;
  }
  if (r != 0) return r;
  if (!S_ISDIR(st.type)) return ENOTDIR;
  std::string path = Join(dir_path, name);
  std::vector<MergedDirEntry> entries;
  r = Merged(st, path, &entries);
  if (r != 0) return r;
  if (!entries.empty()) return ENOTEMPTY;
  bool need_whiteout = LowerHas(dir->state, name, nullptr);
  if (st.upper) {
    if (need_whiteout) {
      r = MakeWhiteout(path, true);
    } else {
      std::string tmp = TempName();
      r = RenameBeneath(upper_fd_.get(), path, work_fd_.get(), tmp) == 0 ? 0 : Errno();
      if (r == 0) RemoveTreeAt(work_fd_.get(), tmp).ok();
    }
  } else {
    r = EnsureUpperDirOf(dir);
    if (r == 0) r = MakeWhiteout(path, false);
  }
  if (r != 0) return r;
  Node* node = FindNode(path);
  if (node != nullptr) StatNode(node, &node->last);
  Removed(dir, node);
  return 0;
}

int WritableFs::Rename(uint64_t parent, std::string_view name, uint64_t new_parent,
                       std::string_view new_name, unsigned flags) {
  if (int r = JournalRoom(true); r != 0) return r;
  if ((flags & ~static_cast<unsigned>(RENAME_NOREPLACE)) != 0) return EINVAL;
  if (Resent().has_value()) return 0;
  PreparedData prepared = PrepareChildData(parent, name);
  MutexLock lock(&mu_);
  Node* p1 = GetNode(parent);
  Node* p2 = GetNode(new_parent);
  if (p1 == nullptr || p2 == nullptr || p1->deleted || p2->deleted) return ENOENT;
  if (!S_ISDIR(p2->state.type)) return ENOTDIR;
  if (new_name.size() > NAME_MAX) return ENAMETOOLONG;
  std::string src_path = Join(PathOf(p1), name);
  std::string dst_path = Join(PathOf(p2), new_name);
  State s, d;
  int r = ResolveChild(p1->state, PathOf(p1), name, &s);
  if (GoneBeforeJournaled(r)) {
    // Renamed by the dead daemon (the destination holds it now): the kernel's id follows it to
    // the new name, or that name would lead to a node the takeover found gone.
    Node* snode = FindNode(src_path);
    if (snode == nullptr) {
      auto it = vanished_.find(std::make_pair(p1->id, std::string(name)));
      snode = it == vanished_.end() ? nullptr : GetNode(it->second);
      if (it != vanished_.end()) vanished_.erase(it);
    }
    if (snode != nullptr && ResolveChild(p2->state, PathOf(p2), new_name, &d) == 0) {
      snode->state = d;
      Moved(p1, p2, snode, FindNode(dst_path), new_name, S_ISDIR(d.type), false);
    }
    JournalDone();
    return 0;
  }
  if (r != 0) return r;
  r = ResolveChild(p2->state, PathOf(p2), new_name, &d);
  bool dst_exists = r == 0;
  if (r != 0 && r != ENOENT) return r;
  if (src_path == dst_path) return 0;
  if (S_ISDIR(s.type) && (dst_path.rfind(src_path + "/", 0) == 0)) return EINVAL;
  if (dst_exists) {
    if ((flags & RENAME_NOREPLACE) != 0) return EEXIST;
    if (S_ISDIR(s.type) && !S_ISDIR(d.type)) return ENOTDIR;
    if (!S_ISDIR(s.type) && S_ISDIR(d.type)) return EISDIR;
    if (S_ISDIR(d.type)) {
      std::vector<MergedDirEntry> entries;
      r = Merged(d, dst_path, &entries);
      if (r != 0) return r;
      if (!entries.empty()) return ENOTEMPTY;
    }
    // Two names of one file: rename(2) does nothing.
    if (!s.upper && !d.upper && s.lower == d.lower && !S_ISDIR(s.type)) return 0;
    if (s.upper && d.upper && !S_ISDIR(s.type)) {
      struct stat a {
      }, b{};
      if (StatBeneath(upper_fd_.get(), src_path, &a) == 0 &&
          StatBeneath(upper_fd_.get(), dst_path, &b) == 0 && a.st_ino == b.st_ino) {
        return 0;
      }
    }
  }
  r = EnsureUpperDirOf(p1);
  if (r == 0) r = EnsureUpperDirOf(p2);
  if (r != 0) return r;
  bool src_whiteout = LowerHas(p1->state, name, nullptr);
  uint32_t dst_lower = 0;
  bool dst_lower_dir = LowerHas(p2->state, new_name, &dst_lower) &&
                       table_.Get(dst_lower)->type == EntryType::kDirectory;
  Node* snode = FindNode(src_path);
  Node* dnode = dst_exists ? FindNode(dst_path) : nullptr;
  if (dst_exists && !d.upper && S_ISREG(d.type)) {
    const fs::Node* dl = table_.Get(d.lower);
    if (dl != nullptr && dl->nlink > 1) {
      r = CopyUpPath(dst_path, d, true);  // the names that stay keep a true link count
      if (r != 0) return r;
      d.upper = true;
    }
  }
  if (dnode != nullptr && d.upper && !S_ISDIR(d.type)) {
    StatNode(dnode, &dnode->last);
    dnode->orphan =
        UniqueFd(OpenBeneath(upper_fd_.get(), dst_path, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  } else if (dnode != nullptr) {
    StatNode(dnode, &dnode->last);
  }

  if (!S_ISDIR(s.type)) {
    r = CopyUpPath(src_path, s, true, &prepared);
    if (r != 0) return r;
    struct stat dst_st {};
    const bool keep = dnode != nullptr && dnode != snode && d.upper && S_ISREG(d.type) &&
                      StatBeneath(upper_fd_.get(), dst_path, &dst_st) == 0 &&
                      S_ISREG(dst_st.st_mode) && HasHandles(dnode->id);
    if (keep) {
      // The replaced file is open: its data moves to the work directory (see Unlink).
      r = KeepOrphan(dnode, dst_path);
      if (r != 0) return r;
    }
    if (RenameBeneath(upper_fd_.get(), src_path, upper_fd_.get(), dst_path) != 0) {
      r = Errno();
      if (keep) ReturnOrphan(dnode, dst_path);
      return r;
    }
    if (src_whiteout) {
      r = MakeWhiteout(src_path, false);
      if (r != 0) return r;
    }
  } else if (s.lower != 0) {
    // A directory with lower content: no redirects, so the merged tree is copied up whole
    // (upper files hard-linked) under the new name and made opaque.
    std::string tmp = TempName();
    std::unordered_map<uint32_t, std::string> copied;
    r = CopyMergedTree(s, src_path, tmp, &copied);
    if (r == 0) {
      r = SetOpaqueBeneath(work_fd_.get(), tmp);
    }
    if (r == 0) r = PlaceFromWork(tmp, dst_path);
    if (r != 0) {
      RemoveTreeAt(work_fd_.get(), tmp).ok();
      return r;
    }
    if (s.upper) {
      if (src_whiteout) {
        r = MakeWhiteout(src_path, true);
      } else {
        std::string gone = TempName();
        r = RenameBeneath(upper_fd_.get(), src_path, work_fd_.get(), gone) == 0 ? 0 : Errno();
        if (r == 0) RemoveTreeAt(work_fd_.get(), gone).ok();
      }
    } else if (src_whiteout) {
      r = MakeWhiteout(src_path, false);
    }
    if (r != 0) return r;
  } else {
    // An upper-only directory: a plain rename in the upper.
    if (dst_lower_dir) {
      r = SetOpaqueBeneath(upper_fd_.get(), src_path);
      if (r != 0) return r;
    }
    struct stat dst {};
    bool dst_upper = StatBeneath(upper_fd_.get(), dst_path, &dst) == 0;
    if (dst_upper && !S_ISDIR(dst.st_mode)) {
      // A whiteout there: swap, and the source name gets the whiteout (or nothing).
      if (RenameBeneath(upper_fd_.get(), src_path, upper_fd_.get(), dst_path, RENAME_EXCHANGE) !=
          0) {
        return Errno();
      }
      if (!src_whiteout) UnlinkBeneath(upper_fd_.get(), src_path, 0);
    } else {
      if (dst_upper) {
        // An empty merged directory whose upper holds only whiteouts: clear it first.
        std::vector<std::string> names;
        UniqueFd dst_dir(OpenBeneath(upper_fd_.get(), dst_path, O_RDONLY | O_DIRECTORY));
        int fd = dst_dir.IsValid() ? fcntl(dst_dir.get(), F_DUPFD_CLOEXEC, 0) : -1;
        if (fd >= 0) {
          DIR* dd = fdopendir(fd);
          if (dd != nullptr) {
            while (dirent* e = readdir(dd)) {
              if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                names.emplace_back(e->d_name);
              }
            }
            closedir(dd);
          } else {
            close(fd);
          }
        }
        for (const std::string& n : names) {
          RemoveTreeAt(dst_dir.get(), n).ok();
        }
      }
      if (RenameBeneath(upper_fd_.get(), src_path, upper_fd_.get(), dst_path) != 0) {
        return Errno();
      }
      if (src_whiteout) {
        r = MakeWhiteout(src_path, false);
        if (r != 0) return r;
      }
    }
  }

  Moved(p1, p2, snode, dnode, new_name, S_ISDIR(s.type), s.lower != 0);
  JournalDone();
  return 0;
}

void WritableFs::Moved(Node* p1, Node* p2, Node* snode, Node* dnode, std::string_view new_name,
                       bool dir, bool had_lower) {
  if (dnode != nullptr && dnode != snode) Detach(dnode);
  if (snode == nullptr) return;
  if (snode->parent != nullptr) snode->parent->children.erase(snode->name);
  snode->deleted = false;
  snode->parent = p2;
  snode->name = std::string(new_name);
  p2->children[snode->name] = snode;
  Journaled(journal_->Move(snode->id, p2->id, snode->name));
  snode->state.upper = true;
  if (dir) {
    snode->state.lower = 0;
    if (had_lower) MarkSubtreeUpper(snode);
  }
  copy_ups_.fetch_add(1, std::memory_order_release);
  MaybeErase(p1);
}

int WritableFs::Link(uint64_t id, uint64_t new_parent, std::string_view new_name, Entry* out) {
  if (int r = JournalRoom(true); r != 0) return r;
  PreparedData prepared = PrepareData(id);
  MutexLock lock(&mu_);
  if (const int answered = AnswerIfResent(new_parent, new_name, out); answered >= 0) {
    return answered;
  }
  Node* src = GetNode(id);
  if (src == nullptr || src->deleted) return ENOENT;
  if (S_ISDIR(src->state.type)) return EPERM;
  Node* dir = nullptr;
  State ds;
  bool over = false;
  int r = ParentForCreate(new_parent, new_name, &dir, &ds, &over);
  if (r != 0) return r;
  // The kernel may cache the source's attributes and pages for long: from now on they
  // change through the new name too.
  pending_invalidations.push_back(src->id);
  r = CopyUp(src, true, &prepared);
  if (r != 0) return r;
  std::string src_path = PathOf(src);
  std::string dst_path = Join(PathOf(dir), new_name);
  std::string tmp;
  JournalStarted();
  if (over) {
    tmp = TempName();
    if (LinkBeneath(upper_fd_.get(), src_path, work_fd_.get(), tmp) != 0) {
      return Errno();
    }
  } else if (LinkBeneath(upper_fd_.get(), src_path, upper_fd_.get(), dst_path) != 0) {
    return Errno();
  }
  State st = src->state;
  st.upper = true;
  if (over) {
    r = PlaceFromWork(tmp, dst_path);
    if (r != 0) {
      UnlinkBeneath(work_fd_.get(), tmp, 0);
      return r;
    }
  }
  if (Node* old = FindNode(dst_path); old != nullptr) Detach(old);
  return MakeEntry(dir, new_name, st, out);
}

}  // namespace imgfs::fs
