// imgfs — WritableFs: copy-up of lower entries into the upper directory.
#include "fs/writable/writable_fs_internal.h"

namespace imgfs::fs {

using namespace writable_internal;  // this module's own helpers

// ---- copy-up ---------------------------------------------------------------------------

WritableFs::PreparedData::~PreparedData() {
  if (!name.empty()) UnlinkBeneath(work_fd, name, 0);
}

WritableFs::PreparedData::PreparedData(PreparedData&& other) noexcept
    : work_fd(other.work_fd),
      lower(std::exchange(other.lower, 0)),
      name(std::exchange(other.name, std::string())),
      error(other.error) {}

WritableFs::PreparedData& WritableFs::PreparedData::operator=(PreparedData&& other) noexcept {
  if (this != &other) {
    if (!name.empty()) UnlinkBeneath(work_fd, name, 0);
    work_fd = other.work_fd;
    lower = std::exchange(other.lower, 0);
    name = std::exchange(other.name, std::string());
    error = other.error;
  }
  return *this;
}

WritableFs::PreparedData WritableFs::PrepareData(uint64_t id) {
  uint32_t lower = 0;
  {
    MutexLock lock(&mu_);
    Node* node = GetNode(id);
    if (node != nullptr && !node->deleted && !node->state.upper && S_ISREG(node->state.type)) {
      lower = node->state.lower;
    }
  }
  return PrepareLowerData(lower);
}

WritableFs::PreparedData WritableFs::PrepareChildData(uint64_t parent, std::string_view name) {
  uint32_t lower = 0;
  {
    MutexLock lock(&mu_);
    // The kernel looked the name up before the rename: its node, no resolving in the upper.
    if (Node* dir = GetNode(parent); dir != nullptr) {
      auto it = dir->children.find(name);
      const Node* node = it == dir->children.end() ? nullptr : it->second;
      if (node != nullptr && !node->deleted && !node->state.upper && S_ISREG(node->state.type)) {
        lower = node->state.lower;
      }
    }
  }
  return PrepareLowerData(lower);
}

WritableFs::PreparedData WritableFs::PrepareLowerData(uint32_t lower) {
  PreparedData out;
  out.work_fd = work_fd_.get();
  if (lower == 0) return out;
  // The copy-up's own check (CopyUpPath) refuses it then.
  if (JournalRoom(true) != 0) return out;
  std::string name = TempName();
  UniqueFd fd(OpenBeneath(work_fd_.get(), name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
  if (!fd.IsValid()) return out;  // the copy-up makes its own and reports why not
  out.lower = lower;
  out.name = std::move(name);
  out.error = CopyLowerData(lower, fd.get(), work_path_ + "/" + out.name);
  return out;
}

int WritableFs::CopyLowerData(uint32_t lower_ino, int fd, const std::string& what) {
  uint64_t offset = 0;
  for (;;) {
    if (copy_chunk_hook_) copy_chunk_hook_();
    Result<std::string> data = lower_->Read(lower_ino, offset, kCopyChunkBytes);
    if (!data.has_value()) {
      IMGFS_LOG(kError) << "copy-up of " << what << ": " << data.error().ToString();
      return EIO;
    }
    if (data->empty()) return 0;
    size_t done = 0;
    while (done < data->size()) {
      ssize_t n =
          pwrite(fd, data->data() + done, data->size() - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Errno();
      }
      done += static_cast<size_t>(n);
    }
    offset += data->size();
  }
}

int WritableFs::CopyLowerTo(uint32_t lower_ino, int dir_fd, const std::string& dir_path,
                            const std::string& name, bool with_data, bool with_xattrs,
                            PreparedData* prepared) {
  const fs::Node* ln = table_.Get(lower_ino);
  Result<struct stat> st = table_.GetAttr(lower_ino);
  if (ln == nullptr || !st.has_value()) return EIO;
  const char* nm = name.c_str();
  std::string abs = dir_path + "/" + name;
  bool is_link = false;
  switch (ln->type) {
    case EntryType::kDirectory:
      if (MkdirBeneath(dir_fd, nm, 0700) != 0) return Errno();
      break;
    case EntryType::kSymlink: {
      Result<std::string_view> target = table_.ReadLink(lower_ino);
      if (!target.has_value()) return EIO;
      if (SymlinkBeneath(std::string(*target), dir_fd, nm) != 0) return Errno();
      is_link = true;
      break;
    }
    case EntryType::kChar:
    case EntryType::kBlock:
    case EntryType::kFifo:
      if (MknodBeneath(dir_fd, nm, (st->st_mode & S_IFMT) | 0600, st->st_rdev) != 0) return Errno();
      break;
    default: {
      if (with_data && prepared != nullptr && prepared->lower == lower_ino) {
        // The data was copied before the lock was taken (PrepareData): that file, or its error.
        if (prepared->error != 0) return prepared->error;
        if (RenameBeneath(work_fd_.get(), prepared->name, dir_fd, nm) != 0) return Errno();
        prepared->name.clear();
        break;
      }
      UniqueFd fd(OpenBeneath(dir_fd, nm, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
      if (!fd.IsValid()) return Errno();
      if (with_data) {
        if (int err = CopyLowerData(lower_ino, fd.get(), abs); err != 0) {
          UnlinkBeneath(dir_fd, nm, 0);
          return err;
        }
      }
      break;
    }
  }
  auto fail = [&](int err) {
    if (ln->type == EntryType::kDirectory) {
      UnlinkBeneath(dir_fd, nm, AT_REMOVEDIR);
    } else {
      UnlinkBeneath(dir_fd, nm, 0);
    }
    return err;
  };
  if (ChownBeneath(dir_fd, nm, st->st_uid, st->st_gid) != 0 && geteuid() == 0) {
    return fail(Errno());
  }
  if (!is_link && ChmodBeneath(dir_fd, nm, st->st_mode & 07777) != 0) return fail(Errno());
  if (with_xattrs) {
    Result<std::vector<std::string_view>> names = table_.ListXattr(lower_ino);
    if (names.has_value()) {
      for (std::string_view n : *names) {
        Result<std::string_view> v = table_.GetXattr(lower_ino, n);
        if (!v.has_value()) continue;
        std::string xname(n);
        // The image's own overlay xattrs would make the copy opaque (or a redirect, which
        // commit refuses): they are never copied into the upper.
        if (IsOverlayXattr(xname)) continue;
        if (int err = SetXattrBeneath(dir_fd, name, xname, *v, 0); err != 0) {
          if (err == ENOSPC || err == EDQUOT) return fail(ENOSPC);
          IMGFS_LOG(kWarning) << "copy-up of " << abs << ": xattr " << xname << ": "
                              << strerror(err);
        }
      }
    }
  }
  struct timespec times[2] = {st->st_mtim, st->st_mtim};
  UtimensBeneath(dir_fd, nm, times);
  return 0;
}

int WritableFs::EnsureUpperDir(const std::string& path) {
  if (path == ".") return 0;
  // A directory the node table knows as upper is there, and so are its parents: no walk.
  if (const Node* n = FindNode(path);
      n != nullptr && !n->deleted && n->state.upper && S_ISDIR(n->state.type)) {
    return 0;
  }
  State st;
  int r = ResolvePath(path, &st);
  if (r != 0) return r;
  if (!S_ISDIR(st.type)) return ENOTDIR;
  if (st.upper) return 0;
  r = EnsureUpperDir(ParentOf(path));
  if (r != 0) return r;
  return CopyUpPath(path, st, false);
}

int WritableFs::EnsureUpperDirOf(Node* dir) {
  if (dir->state.upper) return 0;  // then so are its parents
  int r = EnsureUpperDir(PathOf(dir));
  if (r == 0) dir->state.upper = true;
  return r;
}

int WritableFs::CopyUpPath(const std::string& path, const State& state, bool with_data,
                           PreparedData* prepared) {
  if (state.upper) return 0;
  if (int r = JournalRoom(true); r != 0) return r;
  std::string parent = ParentOf(path);
  int r = EnsureUpperDir(parent);
  if (r != 0) return r;
  struct stat pst {};
  bool have_parent = StatBeneath(upper_fd_.get(), parent, &pst) == 0;
  std::string tmp = TempName();
  r = CopyLowerTo(state.lower, work_fd_.get(), work_path_, tmp, with_data, true, prepared);
  if (r != 0) return r;
  if (RenameBeneath(work_fd_.get(), tmp, upper_fd_.get(), path) != 0) {
    int err = Errno();
    RemoveTreeAt(work_fd_.get(), tmp).ok();
    return err;
  }
  if (have_parent) {
    struct timespec times[2] = {pst.st_atim, pst.st_mtim};
    UtimensBeneath(upper_fd_.get(), parent, times);
  }
  struct stat ust {};
  if (StatBeneath(upper_fd_.get(), path, &ust) == 0) {
    ForgetUpperIno(ust.st_ino);  // a fresh inode; its number may have been used before
    UpperIno(ust.st_ino, state.origin != 0 ? state.origin : state.lower);
  }
  if (Node* n = FindNode(path); n != nullptr) {
    n->state.upper = true;
    copy_ups_.fetch_add(1, std::memory_order_release);
    // The kernel may hold the image entry's attributes for long (its ctime is now the
    // copy's), and the parent's (its ctime changed with the rename into it): drop them.
    pending_invalidations.push_back(n->id);
  }
  if (Node* p = FindNode(parent); p != nullptr) pending_invalidations.push_back(p->id);
  const fs::Node* ln = table_.Get(state.lower);
  if (S_ISREG(state.type) && ln != nullptr && ln->nlink > 1) return LinkGroup(path, state.lower);
  return 0;
}

int WritableFs::CopyUp(Node* node, bool with_data, PreparedData* prepared) {
  if (node->state.upper) return 0;
  if (node->deleted) return ENOENT;
  return CopyUpPath(PathOf(node), node->state, with_data, prepared);
}

int WritableFs::LinkGroup(const std::string& path, uint32_t lower_ino) {
  if (!lower_links_built_) {
    lower_links_built_ = true;
    for (uint64_t ino = 1; ino <= table_.inode_count(); ++ino) {
      const fs::Node* n = table_.Get(ino);
      if (n == nullptr || n->type != EntryType::kDirectory) continue;
      Result<std::vector<DirEntry>> entries = table_.ReadDir(ino);
      if (!entries.has_value()) continue;
      for (const DirEntry& e : *entries) {
        const fs::Node* c = table_.Get(e.ino);
        if (c != nullptr && c->type == EntryType::kRegular && c->nlink > 1) {
          lower_links_[static_cast<uint32_t>(e.ino)].emplace_back(static_cast<uint32_t>(ino),
                                                                  std::string(e.name));
        }
      }
    }
  }
  auto it = lower_links_.find(lower_ino);
  if (it == lower_links_.end()) return 0;
  for (const auto& [dir, name] : it->second) {
    Result<std::string> dir_path = table_.PathOf(dir);
    if (!dir_path.has_value()) continue;
    std::string rel = *dir_path == "/" ? "." : dir_path->substr(1);
    std::string other = Join(rel, name);
    if (other == path) continue;
    State st;
    if (ResolvePath(other, &st) != 0 || st.upper || st.lower != lower_ino) continue;
    std::string parent = ParentOf(other);
    int r = EnsureUpperDir(parent);
    if (r != 0) return r;
    struct stat pst {};
    bool have_parent = StatBeneath(upper_fd_.get(), parent, &pst) == 0;
    std::string tmp = TempName();
    if (LinkBeneath(upper_fd_.get(), path, work_fd_.get(), tmp) != 0) {
      return Errno();
    }
    if (RenameBeneath(work_fd_.get(), tmp, upper_fd_.get(), other) != 0) {
      int err = Errno();
      UnlinkBeneath(work_fd_.get(), tmp, 0);
      return err;
    }
    if (have_parent) {
      struct timespec times[2] = {pst.st_atim, pst.st_mtim};
      UtimensBeneath(upper_fd_.get(), parent, times);
    }
    if (Node* n = FindNode(other); n != nullptr) {
      n->state.upper = true;
      copy_ups_.fetch_add(1, std::memory_order_release);
    }
  }
  return 0;
}

int WritableFs::CopyUpperTree(const std::string& src_path, const std::string& dst_work_path) {
  // A directory of the upper copied (its own metadata) into the work dir; children are
  // handled by CopyMergedTree.
  struct stat st {};
  if (StatBeneath(upper_fd_.get(), src_path, &st) != 0) return Errno();
  const char* nm = dst_work_path.c_str();
  if (MkdirBeneath(work_fd_.get(), nm, 0700) != 0) return Errno();
  if (ChownBeneath(work_fd_.get(), nm, st.st_uid, st.st_gid) != 0 && geteuid() == 0) {
    return Errno();
  }
  if (ChmodBeneath(work_fd_.get(), nm, st.st_mode & 07777) != 0) return Errno();
  std::vector<std::string> names;
  ListXattrsBeneath(upper_fd_.get(), src_path, &names);
  for (const std::string& x : names) {
    if (IsOverlayXattr(x)) continue;
    std::string v;
    if (GetXattrBeneath(upper_fd_.get(), src_path, x, &v) != 0) continue;
    if (SetXattrBeneath(work_fd_.get(), dst_work_path, x, v, 0) == ENOSPC) return ENOSPC;
  }
  return 0;
}

int WritableFs::CopyMergedTree(const State& state, const std::string& src_path,
                               const std::string& dst_name,
                               std::unordered_map<uint32_t, std::string>* copied) {
  int r = state.upper ? CopyUpperTree(src_path, dst_name)
                      : CopyLowerTo(state.lower, work_fd_.get(), work_path_, dst_name, false, true);
  if (r != 0) return r;
  std::vector<MergedDirEntry> entries;
  r = Merged(state, src_path, &entries);
  if (r != 0) return r;
  for (const MergedDirEntry& e : entries) {
    State child;
    if (ResolveChild(state, src_path, e.name, &child) != 0) continue;
    std::string child_src = Join(src_path, e.name);
    std::string child_dst = dst_name + "/" + e.name;
    if (S_ISDIR(child.type)) {
      r = CopyMergedTree(child, child_src, child_dst, copied);
    } else if (child.upper) {
      r = LinkBeneath(upper_fd_.get(), child_src, work_fd_.get(), child_dst) == 0 ? 0 : Errno();
    } else if (auto done = copied->find(child.lower); done != copied->end()) {
      // Another name of a lower hardlink group already copied into this tree.
      r = LinkBeneath(work_fd_.get(), done->second, work_fd_.get(), child_dst) == 0 ? 0 : Errno();
    } else {
      r = CopyLowerTo(child.lower, work_fd_.get(), work_path_, child_dst, true, true);
      if (r == 0 && S_ISREG(child.type)) copied->emplace(child.lower, child_dst);
      struct stat ust {};
      if (r == 0 && StatBeneath(work_fd_.get(), child_dst, &ust) == 0) {
        ForgetUpperIno(ust.st_ino);
        UpperIno(ust.st_ino, child.origin);
      }
    }
    if (r != 0) return r;
  }
  // Creating the children moved the directory's times: give it its source's times back.
  struct stat src {};
  if (StatState(state, src_path, &src) == 0) {
    struct timespec times[2] = {src.st_atim, src.st_mtim};
    UtimensBeneath(work_fd_.get(), dst_name, times);
  }
  return 0;
}

int WritableFs::PlaceFromWork(const std::string& tmp, const std::string& path) {
  struct stat dst {
  }, src{};
  if (StatBeneath(work_fd_.get(), tmp, &src) != 0) return Errno();
  if (StatBeneath(upper_fd_.get(), path, &dst) != 0) {
    if (errno != ENOENT) return Errno();
    if (RenameBeneath(work_fd_.get(), tmp, upper_fd_.get(), path) != 0) return Errno();
    return 0;
  }
  if (!S_ISDIR(dst.st_mode) && !S_ISDIR(src.st_mode)) {
    if (RenameBeneath(work_fd_.get(), tmp, upper_fd_.get(), path) != 0) return Errno();
    return 0;
  }
  // A directory on either side: swap atomically, then remove what was there.
  if (RenameBeneath(work_fd_.get(), tmp, upper_fd_.get(), path, RENAME_EXCHANGE) != 0) {
    return Errno();
  }
  Status st = RemoveTreeAt(work_fd_.get(), tmp);
  if (!st.ok()) IMGFS_LOG(kWarning) << st.ToString();
  return 0;
}

int WritableFs::LinkWhiteout(int root_fd, const std::string& rel) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (LinkBeneath(work_fd_.get(), kSharedWhiteout, root_fd, rel) == 0) return 0;
    if (errno != ENOENT && errno != EMLINK) break;
    // The shared whiteout is gone or has as many links as the filesystem allows: a new one.
    std::string tmp = TempName();
    if (MknodBeneath(work_fd_.get(), tmp, S_IFCHR, makedev(0, 0)) != 0) break;
    if (RenameBeneath(work_fd_.get(), tmp, work_fd_.get(), kSharedWhiteout) != 0) {
      UnlinkBeneath(work_fd_.get(), tmp, 0);
      break;
    }
  }
  return MknodBeneath(root_fd, rel, S_IFCHR, makedev(0, 0)) == 0 ? 0 : Errno();
}

int WritableFs::MakeWhiteout(const std::string& path, bool replace) {
  if (!replace) return LinkWhiteout(upper_fd_.get(), path);
  std::string tmp = TempName();
  int r = LinkWhiteout(work_fd_.get(), tmp);
  if (r != 0) return r;
  r = PlaceFromWork(tmp, path);
  if (r != 0) UnlinkBeneath(work_fd_.get(), tmp, 0);
  return r;
}

}  // namespace imgfs::fs
