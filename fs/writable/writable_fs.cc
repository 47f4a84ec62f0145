// imgfs — WritableFs: the copy-on-write view of a mounted image: set-up, nodes and paths.
#include "fs/writable/writable_fs_internal.h"

namespace imgfs::fs {

using namespace writable_internal;  // this module's own helpers

std::vector<uint64_t> WritableFs::TakeInvalidations() {
  std::vector<uint64_t> out;
  out.swap(pending_invalidations);
  return out;
}

WritableFs::WritableFs(const ImageFilesystem* lower, std::string upper_path, std::string work_path)
    : lower_(lower),
      table_(lower->table()),
      upper_path_(std::move(upper_path)),
      work_path_(std::move(work_path)) {}

WritableFs::~WritableFs() {
  // Remove the work directory only if its name still holds the directory this filesystem
  // made (its parent may belong to the user who gave --upper).
  struct stat a {
  }, b{};
  bool ours = work_fd_.IsValid() && work_parent_fd_.IsValid() && fstat(work_fd_.get(), &a) == 0 &&
              fstatat(work_parent_fd_.get(), work_name_.c_str(), &b, AT_SYMLINK_NOFOLLOW) == 0 &&
              a.st_dev == b.st_dev && a.st_ino == b.st_ino;
  work_fd_.Close();
  if (!ours) return;
  Status st = RemoveTreeAt(work_parent_fd_.get(), work_name_);
  if (!st.ok()) IMGFS_LOG(kWarning) << "removing the work directory: " << st.ToString();
}

Status WritableFs::MakeWorkDir(bool takeover) {
  // The work directory's parent may be writable by someone else (the owner of a given
  // --upper's parent), who could swap names in it at any moment. So: one descriptor of the
  // parent, everything else relative to it without following links, and a directory that
  // is ours (made by us, owned by us, 0700) or nothing.
  const std::string& work = work_path_;
  size_t slash = work.rfind('/');
  std::string parent = slash == 0 ? "/" : work.substr(0, slash);
  work_name_ = work.substr(slash + 1);
  work_parent_fd_ = UniqueFd(open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!work_parent_fd_.IsValid()) return Status::FromErrno(errno, "opening " + parent);
  const int pfd = work_parent_fd_.get();
  const char* name = work_name_.c_str();
  struct stat st {};
  if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    // Leftovers of a killed daemon: only a directory of ours is emptied (or taken over).
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
      return Status::InvalidArgument("the work directory " + work +
                                     " exists and is not a directory owned by uid " +
                                     std::to_string(geteuid()) + ": not touching it");
    }
    // Never one that a live WritableFs serves (another mount of the same upper).
    UniqueFd held(openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!held.IsValid()) return Status::FromErrno(errno, "opening " + work);
    if (flock(held.get(), LOCK_EX | LOCK_NB) != 0) {
      return Status::Unavailable("the work directory " + work +
                                 " is in use by another mount of the same upper directory");
    }
    if (takeover) {
      if (fstat(held.get(), &st) != 0) return Status::FromErrno(errno, "stat " + work);
      if (st.st_uid != geteuid() || (st.st_mode & 07777) != 0700) {
        return Status::InvalidArgument("the work directory " + work +
                                       " is not the private directory of this mount");
      }
      work_fd_ = std::move(held);
      return Status::Ok();
    }
    held.Close();
    IMGFS_RETURN_IF_ERROR(RemoveTreeAt(pfd, work_name_).WithContext("emptying " + work));
  } else if (errno != ENOENT) {
    return Status::FromErrno(errno, "stat " + work);
  } else if (takeover) {
    return Status::NotFound("no work directory " + work + " to take the mount over from");
  }
  if (mkdirat(pfd, name, 0700) != 0) return Status::FromErrno(errno, "mkdir " + work);
  work_fd_ = UniqueFd(openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!work_fd_.IsValid()) return Status::FromErrno(errno, "opening " + work);
  // Someone may have renamed ours away and put their own directory in its place between
  // mkdirat and openat: theirs is not owned by us.
  if (fstat(work_fd_.get(), &st) != 0) return Status::FromErrno(errno, "stat " + work);
  if (st.st_uid != geteuid()) {
    work_fd_.Close();
    return Status::InvalidArgument("the work directory " + work +
                                   " was replaced while it was created (owner uid " +
                                   std::to_string(st.st_uid) + ")");
  }
  if (flock(work_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    return Status::Unavailable("the work directory " + work + " is in use by another mount");
  }
  // Exactly 0700 whatever the umask: copy-up temporaries (setuid files among them) wait here.
  if (fchmod(work_fd_.get(), 0700) != 0) return Status::FromErrno(errno, "chmod " + work);
  return Status::Ok();
}

std::string WritableFs::DefaultWorkDir(const std::string& upper_dir) {
  std::string upper = upper_dir;
  while (upper.size() > 1 && upper.back() == '/') upper.pop_back();
  size_t slash = upper.rfind('/');
  if (slash == std::string::npos || upper == "/") return "";
  std::string parent = slash == 0 ? "/" : upper.substr(0, slash);
  std::string base = upper.substr(slash + 1);
  struct stat a {
  }, b{};
  if (stat(parent.c_str(), &a) != 0 || stat(upper.c_str(), &b) != 0) return "";
  if (a.st_dev != b.st_dev) return "";
  return (parent == "/" ? "" : parent) + "/." + base + ".imgfs-work";
}

Result<std::unique_ptr<WritableFs>> WritableFs::Open(const ImageFilesystem* lower,
                                                     const std::string& upper_dir,
                                                     const std::string& work_dir, bool takeover) {
  char buf[PATH_MAX];
  if (realpath(upper_dir.c_str(), buf) == nullptr) {
    return Status::InvalidArgument("upper directory " + upper_dir + ": " + strerror(errno));
  }
  std::string upper = buf;
  // The work directory's absolute path: its parent resolved, its own name never (a link
  // there is refused by MakeWorkDir, not followed). The parent must exist.
  std::string work = work_dir;
  while (work.size() > 1 && work.back() == '/') work.pop_back();
  {
    size_t slash = work.rfind('/');
    std::string parent = slash == std::string::npos ? "." : work.substr(0, slash);
    if (parent.empty()) parent = "/";
    std::string name = slash == std::string::npos ? work : work.substr(slash + 1);
    if (name.empty() || name == "." || name == "..") {
      return Status::InvalidArgument("work directory " + work_dir + ": not a directory name");
    }
    if (realpath(parent.c_str(), buf) == nullptr) {
      return Status::InvalidArgument("work directory " + work_dir + ": " + strerror(errno));
    }
    std::string real_parent = buf;
    work = (real_parent == "/" ? "" : real_parent) + "/" + name;
  }
  if (work == upper || work.rfind(upper + "/", 0) == 0 || upper.rfind(work + "/", 0) == 0) {
    return Status::InvalidArgument("the work directory " + work +
                                   " must not be inside the upper directory " + upper +
                                   " (nor contain it)");
  }
  std::unique_ptr<WritableFs> fs(new WritableFs(lower, upper, work));
  fs->upper_fd_ = UniqueFd(open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fs->upper_fd_.IsValid()) return Status::FromErrno(errno, "opening " + upper);
  IMGFS_RETURN_IF_ERROR(fs->MakeWorkDir(takeover));
  struct stat ust {
  }, wst{};
  if (fstat(fs->upper_fd_.get(), &ust) != 0 || fstat(fs->work_fd_.get(), &wst) != 0) {
    return Status::FromErrno(errno, "stat " + upper);
  }
  if (ust.st_dev != wst.st_dev) {
    return Status::InvalidArgument("the work directory " + work +
                                   " is not on the filesystem of the upper directory " + upper);
  }
  // The probe becomes the shared whiteout (MakeWhiteout); a takeover finds it there.
  struct stat wo {};
  const bool have_whiteout =
      takeover && fstatat(fs->work_fd_.get(), kSharedWhiteout, &wo, AT_SYMLINK_NOFOLLOW) == 0 &&
      IsWhiteout(wo);
  if (!have_whiteout &&
      MknodBeneath(fs->work_fd_.get(), kSharedWhiteout, S_IFCHR, makedev(0, 0)) != 0) {
    return Status::InvalidArgument(
        "cannot create whiteouts (character device 0/0) in " + work + ": " + strerror(errno) +
        " (a writable mount needs CAP_MKNOD, i.e. root or a user namespace)");
  }

  const NodeTable& table = lower->table();
  MutexLock lock(&fs->mu_);
  fs->next_st_ino_ = table.inode_count() + 1;
  // A fresh upper: give it the image root's metadata (the merged root is the upper root).
  DIR* d = fdopendir(dup(fs->upper_fd_.get()));
  bool empty = true;
  if (d != nullptr) {
    while (dirent* e = readdir(d)) {
      if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
        empty = false;
        break;
      }
    }
    closedir(d);
  }
  if (empty && table.Get(NodeTable::kRootIno) != nullptr) {
    Result<struct stat> root = table.GetAttr(NodeTable::kRootIno);
    if (root.has_value()) {
      if (fchown(fs->upper_fd_.get(), root->st_uid, root->st_gid) != 0 && geteuid() == 0) {
        return Status::FromErrno(errno, "chown " + upper);
      }
      if (fchmod(fs->upper_fd_.get(), root->st_mode & 07777) != 0) {
        return Status::FromErrno(errno, "chmod " + upper);
      }
      Result<std::vector<std::string_view>> names = table.ListXattr(NodeTable::kRootIno);
      if (names.has_value()) {
        for (std::string_view n : *names) {
          Result<std::string_view> v = table.GetXattr(NodeTable::kRootIno, n);
          if (v.has_value() && !IsOverlayXattr(n)) {
            std::string name(n);
            fsetxattr(fs->upper_fd_.get(), name.c_str(), v->data(), v->size(), 0);
          }
        }
      }
      struct timespec times[2] = {root->st_mtim, root->st_mtim};
      futimens(fs->upper_fd_.get(), times);
    }
  }
  auto root = std::make_unique<Node>();
  root->id = 1;
  root->lookups = 1;
  root->state.upper = true;
  root->state.type = S_IFDIR;
  root->state.origin = static_cast<uint32_t>(NodeTable::kRootIno);
  bool is_opaque = IsOpaqueBeneath(fs->upper_fd_.get(), ".");
  root->state.lower =
      !is_opaque && table.Get(NodeTable::kRootIno) != nullptr ? NodeTable::kRootIno : 0;
  fs->nodes_.emplace(1, std::move(root));
  if (!takeover) {
    IMGFS_ASSIGN_OR_RETURN(fs->journal_, WritableJournal::Create(fs->work_fd_.get()));
    return fs;
  }
  IMGFS_ASSIGN_OR_RETURN(fs->journal_, WritableJournal::Resume(fs->work_fd_.get()));
  IMGFS_RETURN_IF_ERROR(fs->Restore().WithContext("taking over " + work));
  return fs;
}

void WritableFs::Journaled(const Status& st) {
  if (!st.ok()) IMGFS_LOG(kError) << "writable journal: " << st.ToString();
}

int WritableFs::JournalRoom(bool makes) {
  // A request that makes nothing writes a few lines: 4 KiB holds the longest, many times.
  Status st = journal_->Reserve(makes ? WritableJournal::kReserveBytes / 2 : 4096);
  if (st.ok()) return 0;
  if (st.code() == StatusCode::kNoSpace) return ENOSPC;
  IMGFS_LOG(kError) << "writable journal: " << st.ToString();
  return EIO;
}

namespace {
thread_local RequestId current_request;
}  // namespace

WritableFs::RequestScope::RequestScope(RequestId request) : outer_(current_request) {
  current_request = request;
}
WritableFs::RequestScope::~RequestScope() { current_request = outer_; }

RequestId WritableFs::CurrentRequest() { return current_request; }

std::optional<WritableJournal::RequestRecord> WritableFs::Resent() const {
  const RequestId request = current_request;
  if (!request.resent || request.unique == 0) return std::nullopt;
  return journal_->FindRequest(request.unique);
}

bool WritableFs::GoneBeforeJournaled(int r) {
  return r == ENOENT && current_request.resent && current_request.unique != 0;
}

int WritableFs::AnswerResent(uint64_t id, Entry* out) {
  Node* node = GetNode(id);
  if (node == nullptr) return -1;
  const int r = StatNode(node, &out->attr);
  if (r != 0) return r;
  out->id = id;
  out->cacheable = Cacheable(node);
  return 0;
}

void WritableFs::JournalDone() {
  const uint64_t unique = current_request.unique;
  if (unique != 0) Journaled(journal_->Done(unique));
}

void WritableFs::JournalStarted() {
  const uint64_t unique = current_request.unique;
  if (unique != 0) Journaled(journal_->Started(unique));
}

int WritableFs::AnswerIfResent(uint64_t parent, std::string_view name, Entry* out,
                               const Caller* caller, mode_t mode) {
  std::optional<WritableJournal::RequestRecord> rec = Resent();
  if (!rec) return -1;
  if (rec->id != 0) return AnswerResent(rec->id, out);
  // Started, with no entry journaled: made by the dead daemon if the name is there now
  // (it was free when the start was journaled, under mu_).
  Node* dir = GetNode(parent);
  if (dir == nullptr || dir->deleted) return -1;
  State st;
  const std::string dir_path = PathOf(dir);
  if (ResolveChild(dir->state, dir_path, name, &st) != 0 || !st.upper) return -1;
  if (caller != nullptr) {
    const int r = SetNewOwnerAgain(dir_path, name, *caller, st.type, mode);
    if (r != 0) return r;
  }
  return MakeEntry(dir, name, st, out, /*created=*/true);
}

int WritableFs::SetNewOwnerAgain(const std::string& dir_path, std::string_view name,
                                 const Caller& caller, mode_t type, mode_t mode) {
  const std::string path = Join(dir_path, name);
  return writable_internal::SetNewOwner(upper_fd_.get(), path.c_str(), upper_fd_.get(), dir_path,
                                        caller, type, &mode);
}

Status WritableFs::Restore() {
  const WritableJournal& j = *journal_;
  next_id_ = std::max(next_id_, j.next_id());
  next_st_ino_ = std::max(next_st_ino_, j.next_st_ino());
  for (const auto& [upper, st_ino] : j.upper_inos()) {
    upper_inos_[static_cast<ino_t>(upper)] = st_ino;
    claimed_inos_[st_ino] = static_cast<ino_t>(upper);
  }
  // Parents before children: breadth first from the root; ids not reached are deleted names.
  std::map<uint64_t, std::vector<uint64_t>> below;
  for (const auto& [id, rec] : j.nodes()) below[rec.parent].push_back(id);
  std::vector<uint64_t> order;
  std::vector<uint64_t> queue{1};
  for (size_t i = 0; i < queue.size(); ++i) {
    auto it = below.find(queue[i]);
    if (it == below.end()) continue;
    for (uint64_t id : it->second) {
      order.push_back(id);
      queue.push_back(id);
    }
  }
  for (const auto& [id, rec] : j.nodes()) {
    auto node = std::make_unique<Node>();
    node->id = id;
    node->name = rec.name;
    node->lookups = rec.lookups;
    node->deleted = true;
    nodes_.emplace(id, std::move(node));
  }
  for (uint64_t id : order) {
    Node* node = GetNode(id);
    Node* parent = GetNode(j.nodes().at(id).parent);
    node->parent = parent;
    node->deleted = false;
    parent->children.emplace(node->name, node);
  }
  // What each name is now: the upper says (the dead daemon may have changed it after its
  // last reply). A name that is gone is a deleted one; so is one whose file the dead daemon
  // had moved to the work directory (an orphan journaled, the deletion not yet): what the
  // name holds now, if anything, is another file (renamed over it).
  std::vector<Node*> gone;
  for (uint64_t id : order) {
    Node* node = GetNode(id);
    if (j.orphans().contains(id) || ResolvePath(PathOf(node), &node->state) != 0) {
      gone.push_back(node);
    }
  }
  for (Node* node : gone) {
    if (node->parent != nullptr) {
      vanished_[{node->parent->id, node->name}] = node->id;
      node->parent->children.erase(node->name);
    }
    node->parent = nullptr;
    node->deleted = true;
    Journaled(journal_->Deleted(node->id));
  }
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    const bool unused = it->second->deleted && it->second->lookups == 0 &&
                        it->second->children.empty() && !j.orphans().contains(it->first);
    it = unused ? nodes_.erase(it) : std::next(it);
  }
  for (auto& [id, node] : nodes_) {
    if (!node->deleted) continue;
    // Also an orphan whose record the dead daemon did not get to write.
    if (struct stat st{}; OpenOrphan(node.get(), &st)) {
      if (!j.orphans().contains(id)) Journaled(journal_->Orphan(id, true));
      node->orphan_in_work = true;
      node->state.upper = true;
      node->state.type = S_IFREG;
      node->last = st;
      node->last.st_ino = UpperIno(st.st_ino, 0);
    }
  }
  // Handles: opened again as the dead daemon had them (never truncating or creating again).
  MutexLock hl(&handles_mu_);
  next_fh_ = std::max(next_fh_, j.next_fh());
  for (const auto& [fh, rec] : j.handles()) {
    auto handle = std::make_shared<Handle>();
    MutexLock l(&handle->mu);
    handle->id = rec.id;
    handle->writable = (rec.flags & O_ACCMODE) != O_RDONLY;
    const int flags =
        (rec.flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_DIRECT)) | O_CLOEXEC | O_NOFOLLOW;
    Node* node = GetNode(rec.id);
    if (node != nullptr && node->orphan_in_work) {
      handle->fd =
          UniqueFd(openat(work_fd_.get(), WritableJournal::OrphanName(rec.id).c_str(), flags));
    } else if (node != nullptr && !node->deleted && node->state.upper) {
      handle->fd = UniqueFd(OpenBeneath(upper_fd_.get(), PathOf(node), flags));
    } else if (!handle->writable && rec.lower != 0) {
      handle->lower = static_cast<uint32_t>(rec.lower);
    }
    if (!handle->fd.IsValid() && handle->lower == 0) {
      IMGFS_LOG(kWarning) << "taking over: handle " << fh << " of id " << rec.id
                          << " cannot be opened again; it answers EBADF";
    }
    handles_.emplace(fh, std::move(handle));
  }
  return Status::Ok();
}

// ---- nodes and paths -------------------------------------------------------------------

WritableFs::Node* WritableFs::GetNode(uint64_t id) const {
  auto it = nodes_.find(id);
  return it == nodes_.end() ? nullptr : it->second.get();
}

std::string WritableFs::PathOf(const Node* node) const {
  if (node->id == 1) return ".";
  std::vector<const std::string*> names;
  for (const Node* n = node; n != nullptr && n->id != 1; n = n->parent) names.push_back(&n->name);
  std::string path;
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    if (!path.empty()) path += '/';
    path += **it;
  }
  return path;
}

WritableFs::Node* WritableFs::FindNode(const std::string& path) const {
  Node* node = GetNode(1);
  if (path == ".") return node;
  size_t start = 0;
  while (node != nullptr && start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string_view part = std::string_view(path).substr(
        start, slash == std::string::npos ? std::string::npos : slash - start);
    auto it = node->children.find(part);
    node = it == node->children.end() ? nullptr : it->second;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return node;
}

WritableFs::State WritableFs::NodeState(const Node* node) const { return node->state; }

bool WritableFs::LowerHas(const State& parent, std::string_view name, uint32_t* lower_ino) const {
  if (parent.lower == 0) return false;
  Result<uint64_t> ino = table_.Lookup(parent.lower, name);
  if (!ino.has_value()) return false;
  if (lower_ino != nullptr) *lower_ino = static_cast<uint32_t>(*ino);
  return true;
}

int WritableFs::ResolveChild(const State& parent, const std::string& parent_path,
                             std::string_view name, State* out) const {
  if (!S_ISDIR(parent.type)) return ENOTDIR;
  if (name.size() > NAME_MAX) return ENAMETOOLONG;
  uint32_t lower_ino = 0;
  bool in_lower = LowerHas(parent, name, &lower_ino);
  const fs::Node* lower_node = in_lower ? table_.Get(lower_ino) : nullptr;
  bool lower_is_dir = lower_node != nullptr && lower_node->type == EntryType::kDirectory;
  if (parent.upper) {
    std::string path = Join(parent_path, name);
    struct stat st {};
    if (StatBeneath(upper_fd_.get(), path, &st) == 0) {
      if (IsWhiteout(st)) return ENOENT;
      *out = State{};
      out->upper = true;
      out->type = st.st_mode & S_IFMT;
      if (S_ISDIR(st.st_mode)) {
        std::string v;
        bool opaque = IsOpaqueBeneath(upper_fd_.get(), path);
        out->lower = !opaque && lower_is_dir ? lower_ino : 0;
        out->origin = lower_is_dir ? lower_ino : 0;
      } else {
        out->origin = in_lower && !lower_is_dir ? lower_ino : 0;
        out->lower = out->origin;
      }
      return 0;
    }
    if (errno != ENOENT) return Errno();
  }
  if (!in_lower || lower_node == nullptr) return ENOENT;
  *out = State{};
  out->lower = lower_ino;
  out->origin = lower_ino;
  switch (lower_node->type) {
    case EntryType::kDirectory:
      out->type = S_IFDIR;
      break;
    case EntryType::kSymlink:
      out->type = S_IFLNK;
      break;
    case EntryType::kChar:
      out->type = S_IFCHR;
      break;
    case EntryType::kBlock:
      out->type = S_IFBLK;
      break;
    case EntryType::kFifo:
      out->type = S_IFIFO;
      break;
    default:
      out->type = S_IFREG;
      break;
  }
  return 0;
}

int WritableFs::ResolvePath(const std::string& path, State* out) const {
  State state = GetNode(1)->state;
  std::string at = ".";
  if (path != ".") {
    size_t start = 0;
    for (;;) {
      size_t slash = path.find('/', start);
      std::string part =
          path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
      State next;
      int r = ResolveChild(state, at, part, &next);
      if (r != 0) return r;
      state = next;
      at = Join(at, part);
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
  }
  *out = state;
  return 0;
}

uint64_t WritableFs::UpperIno(ino_t upper_ino, uint32_t origin) {
  auto it = upper_inos_.find(upper_ino);
  if (it != upper_inos_.end()) return it->second;
  uint64_t v = origin != 0 && claimed_inos_.count(origin) == 0 ? origin : next_st_ino_++;
  upper_inos_.emplace(upper_ino, v);
  claimed_inos_.emplace(v, upper_ino);
  Journaled(journal_->UpperIno(upper_ino, v));
  return v;
}

void WritableFs::ForgetUpperIno(ino_t upper_ino) {
  auto it = upper_inos_.find(upper_ino);
  if (it == upper_inos_.end()) return;
  claimed_inos_.erase(it->second);
  upper_inos_.erase(it);
  Journaled(journal_->ForgetUpperIno(upper_ino));
}

void WritableFs::ShowUpper(struct stat* st, uint32_t origin) {
  if (auto it = work_links_.find(st->st_ino); it != work_links_.end()) {
    st->st_nlink -= std::min<nlink_t>(st->st_nlink, it->second);
  }
  st->st_ino = UpperIno(st->st_ino, origin);
}

int WritableFs::StatState(const State& state, const std::string& path, struct stat* out) {
  if (state.upper) {
    if (StatBeneath(upper_fd_.get(), path, out) != 0) return Errno();
    ShowUpper(out, state.origin);
  } else {
    Result<struct stat> st = table_.GetAttr(state.lower);
    if (!st.has_value()) return EIO;
    *out = *st;
  }
  if (S_ISDIR(out->st_mode) && state.lower != 0) {
    // A directory of the image is a merged directory, or becomes one at its first copy-up:
    // its subdirectories are not all in one place. Like overlayfs for merged directories,
    // report nlink 1 (find(1) and fts then do not count on it), and the image's size 0, so
    // that a copy-up does not change what stat says (tar would see "file changed as we
    // read it").
    out->st_nlink = 1;
    out->st_size = 0;
    out->st_blocks = 0;
  }
  return 0;
}

int WritableFs::StatNode(Node* node, struct stat* out) {
  if (node->deleted) {
    if (node->orphan.IsValid()) {
      if (fstat(node->orphan.get(), out) != 0) return Errno();
      ShowUpper(out, node->state.origin);
      node->last = *out;
      return 0;
    }
    *out = node->last;
    return out->st_mode != 0 ? 0 : ENOENT;
  }
  int r = StatState(node->state, PathOf(node), out);
  if (r == 0) node->last = *out;
  return r;
}

bool WritableFs::Cacheable(const Node* node) const {
  if (node->deleted) return false;
  if (node->state.upper) {
    // Every change of an upper entry comes through a request on its own id, except those
    // through another name of a hardlink group (one id per name) and the copy-ups and
    // renames that push invalidations: a single-name entry may be cached for long.
    if (S_ISDIR(node->state.type)) return true;
    // A name in the work directory is another name (its open handles write to it).
    auto raw = claimed_inos_.find(node->last.st_ino);
    return node->last.st_nlink <= 1 &&
           (raw == claimed_inos_.end() || !work_links_.contains(raw->second));
  }
  if (node->state.type != S_IFREG) return true;
  const fs::Node* ln = table_.Get(node->state.lower);
  return ln != nullptr && ln->nlink <= 1;
}

int WritableFs::MakeEntry(Node* parent, std::string_view name, const State& state, Entry* out,
                          bool created, bool listed) {
  Node* node = nullptr;
  bool fresh_node = false;
  auto it = parent->children.find(name);
  if (it != parent->children.end()) {
    node = it->second;
    node->state = state;
  } else {
    fresh_node = true;
    auto fresh = std::make_unique<Node>();
    fresh->id = next_id_++;
    fresh->parent = parent;
    fresh->name = std::string(name);
    fresh->state = state;
    node = fresh.get();
    parent->children.emplace(node->name, node);
    nodes_.emplace(node->id, std::move(fresh));
  }
  int r = StatNode(node, &out->attr);
  if (r != 0) {
    MaybeErase(node);
    return r;
  }
  node->lookups++;
  const uint64_t unique = listed ? 0 : CurrentRequest().unique;
  Journaled(fresh_node ? journal_->NewNode(node->id, parent->id, node->name, created, unique)
                       : journal_->Lookup(node->id, unique));
  out->id = node->id;
  out->cacheable = Cacheable(node);
  return 0;
}

void WritableFs::Detach(Node* node) {
  if (node == nullptr || node->id == 1) return;
  Node* parent = node->parent;
  if (parent != nullptr) {
    parent->children.erase(node->name);
    Journaled(journal_->Deleted(node->id));
  }
  node->parent = nullptr;
  node->deleted = true;
  if (node->lookups == 0) nodes_.erase(node->id);
  if (parent != nullptr) MaybeErase(parent);
}

void WritableFs::MaybeErase(Node* node) {
  while (node != nullptr && node->id != 1 && node->lookups == 0 && node->children.empty()) {
    Node* parent = node->parent;
    if (parent != nullptr) parent->children.erase(node->name);
    nodes_.erase(node->id);
    node = parent;
  }
}

void WritableFs::MarkSubtreeUpper(Node* node) {
  for (auto& [name, child] : node->children) {
    // A copied tree: new inodes and ctimes below, whatever was cached of them is stale.
    pending_invalidations.push_back(child->id);
    child->state.upper = true;
    if (S_ISDIR(child->state.type)) {
      child->state.lower = 0;
      MarkSubtreeUpper(child);
    }
  }
}

std::string WritableFs::TempName() {
  return "tmp-" + std::to_string(getpid()) + "-" + std::to_string(++temp_counter_);
}

int WritableFs::Merged(const State& state, const std::string& path,
                       std::vector<MergedDirEntry>* out) {
  std::map<std::string, MergedDirEntry> names;
  std::vector<std::string> hidden;
  if (state.upper) {
    int fd = OpenBeneath(upper_fd_.get(), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Errno();
    DIR* d = fdopendir(fd);
    if (d == nullptr) {
      close(fd);
      return Errno();
    }
    errno = 0;
    while (dirent* e = readdir(d)) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      std::string name = e->d_name;
      hidden.push_back(name);
      State child;
      if (ResolveChild(state, path, name, &child) != 0) continue;  // a whiteout
      struct stat st {};
      if (StatState(child, Join(path, name), &st) != 0) continue;
      names[name] = MergedDirEntry{name, st.st_ino, child.type};
    }
    closedir(d);
  }
  if (state.lower != 0) {
    Result<std::vector<DirEntry>> lower = table_.ReadDir(state.lower);
    if (lower.has_value()) {
      std::sort(hidden.begin(), hidden.end());
      for (const DirEntry& e : *lower) {
        std::string name(e.name);
        if (std::binary_search(hidden.begin(), hidden.end(), name)) continue;
        State child;
        if (ResolveChild(state, path, name, &child) != 0) continue;
        names[name] = MergedDirEntry{name, e.ino, child.type};
      }
    }
  }
  out->clear();
  for (auto& [name, e] : names) out->push_back(std::move(e));
  return 0;
}

}  // namespace imgfs::fs
