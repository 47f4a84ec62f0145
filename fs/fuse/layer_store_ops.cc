// imgfs — the FUSE mount of an Additional Layer Store.
#include "fs/fuse/layer_store_ops.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/log.h"
#include "fs/fuse/fuse_ops.h"
#include "fs/fuse/lowlevel.h"
#include "fs/fuse/reply.h"
#include "fs/fuse/session.h"
#include "fs/fuse/takeover.h"
#include "fs/layer_store/layer_store_journal.h"

namespace imgfs::fs {

namespace {

constexpr uint64_t kSlotShift = 32;
constexpr uint64_t kLayerDirK = 0;
constexpr uint64_t kInfoK = 1;
constexpr uint64_t kBlobK = 2;
constexpr uint64_t kDiffBaseK = 15;  // diff inode i → k = 15 + i (i ≥ 1)
// On a layer directory: the references containers/storage holds on it (`use` − rmdir), in
// decimal. Not part of containers/storage's contract: for operators and tests.
constexpr std::string_view kReferencesXattr = "user.imgfs.references";

// What the kernel can be told about one inode.
struct Where {
  enum class Kind { kRoot, kRefDir, kLayerDir, kInfo, kBlob, kDiff } kind = Kind::kRoot;
  uint64_t ref_dir = 0;  // kRefDir: its inode
  uint64_t slot = 0;     // layer nodes
  uint64_t inner = 0;    // kDiff: inode of the layer's tree
};

}  // namespace

struct LayerStoreSession::State {
  LayerStore* store = nullptr;
  fuse_session* session = nullptr;
  std::function<void()> on_ready;
  std::unique_ptr<LayerStoreJournal> names;  // directory numbers
  std::function<void(int, std::string_view)> on_connection;
  const Handover* handover = nullptr;

  Result<Where> Locate(uint64_t ino) const {
    Where w;
    if (ino == FUSE_ROOT_ID) return w;
    if (ino < (uint64_t{1} << kSlotShift)) {
      if (!names->RefName(ino).has_value()) return Status::NotFound("no such inode");
      w.kind = Where::Kind::kRefDir;
      w.ref_dir = ino;
      return w;
    }
    w.slot = ino >> kSlotShift;
    const uint64_t k = ino & ((uint64_t{1} << kSlotShift) - 1);
    if (!names->SlotAt(w.slot).has_value()) return Status::NotFound("no such inode");
    if (k == kLayerDirK) {
      w.kind = Where::Kind::kLayerDir;
    } else if (k == kInfoK) {
      w.kind = Where::Kind::kInfo;
    } else if (k == kBlobK) {
      w.kind = Where::Kind::kBlob;
    } else if (k > kDiffBaseK) {
      w.kind = Where::Kind::kDiff;
      w.inner = k - kDiffBaseK;
    } else {
      return Status::NotFound("no such inode");
    }
    return w;
  }

  // The names of a located slot (Locate checked it is recorded; records are never removed).
  LayerStoreJournal::Layer SlotAt(uint64_t slot) const { return *names->SlotAt(slot); }

  // The layer of `slot`, from the store (which loads it again after its last reference was
  // dropped and it was freed, or in a daemon that took the mount over).
  Result<std::shared_ptr<const StoreLayer>> LayerOf(uint64_t slot) const {
    const LayerStoreJournal::Layer l = SlotAt(slot);
    return store->Open(l.ref_element, l.digest_element);
  }

  std::string RefName(uint64_t ino) const { return names->RefName(ino).value_or(std::string()); }
};

namespace {

using State = LayerStoreSession::State;

State& StateOf(fuse_req_t req) { return *static_cast<State*>(fuse_req_userdata(req)); }

uint64_t Ino(uint64_t slot, uint64_t k) { return (slot << kSlotShift) | k; }

struct stat DirAttr(uint64_t ino) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = S_IFDIR | 0755;
  st.st_nlink = 2;
  st.st_blksize = 4096;
  return st;
}

// The root: only the daemon's user may look names up in it. A lookup makes the daemon fetch
// an image with the daemon's credentials, and what it fetched is readable below the mount
// (allow_other): another user must not reach private images that way.
struct stat RootAttr() {
  struct stat st = DirAttr(FUSE_ROOT_ID);
  st.st_mode = S_IFDIR | 0700;
  st.st_uid = geteuid();
  st.st_gid = getegid();
  return st;
}

struct stat FileAttr(uint64_t ino, uint64_t size) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = S_IFREG | 0444;
  st.st_nlink = 1;
  st.st_size = static_cast<off_t>(size);
  st.st_blocks = static_cast<blkcnt_t>((size + 511) / 512);
  st.st_blksize = 4096;
  return st;
}

template <typename Body>
void Guard(fuse_req_t req, const char* op, Body&& body) noexcept {
  RunGuarded(op, body, [req](int err) { fuse_reply_err(req, err); });
}

Result<struct stat> Attr(State& s, uint64_t ino) {
  IMGFS_ASSIGN_OR_RETURN(Where w, s.Locate(ino));
  switch (w.kind) {
    case Where::Kind::kRoot:
      return RootAttr();
    case Where::Kind::kRefDir:
    case Where::Kind::kLayerDir:
      return DirAttr(ino);
    case Where::Kind::kInfo: {
      IMGFS_ASSIGN_OR_RETURN(std::shared_ptr<const StoreLayer> layer, s.LayerOf(w.slot));
      return FileAttr(ino, layer->info.size());
    }
    case Where::Kind::kBlob: {
      IMGFS_ASSIGN_OR_RETURN(std::shared_ptr<const StoreLayer> layer, s.LayerOf(w.slot));
      const int64_t size = layer->descriptor.size;
      return FileAttr(ino, size > 0 ? static_cast<uint64_t>(size) : 0);
    }
    case Where::Kind::kDiff: {
      IMGFS_ASSIGN_OR_RETURN(std::shared_ptr<const StoreLayer> layer, s.LayerOf(w.slot));
      IMGFS_ASSIGN_OR_RETURN(struct stat st, layer->diff->GetAttr(w.inner));
      st.st_ino = static_cast<ino_t>(ino);
      return st;
    }
  }
  return Status::Internal("unreachable");
}

void Init(void* userdata, fuse_conn_info* conn) noexcept {
  (void)conn;
  auto* s = static_cast<State*>(userdata);
  if (s->on_ready) {
    try {
      s->on_ready();
    } catch (...) {
      IMGFS_LOG(kError) << "layer store: ready hook failed";
    }
  }
}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name_c) noexcept {
  Guard(req, "lookup", [&] {
    State& s = StateOf(req);
    const std::string_view name(name_c);
    Result<Where> w = s.Locate(parent);
    if (!w.has_value()) return ReplyStatus(req, "lookup", parent, w.error());
    switch (w->kind) {
      case Where::Kind::kRoot: {
        // Any name that decodes to a reference is a directory: what is below it is decided
        // when a layer is looked up (so a root lookup costs no network round trip).
        if (!DecodeRefElement(name).has_value()) return (void)fuse_reply_err(req, ENOENT);
        Result<uint64_t> ino = s.names->RefDir(name);
        if (!ino.has_value()) return ReplyStatus(req, "lookup", parent, ino.error());
        ReplyEntry(req, *ino, DirAttr(*ino), kImmutableTimeoutSeconds);
        return;
      }
      case Where::Kind::kRefDir: {
        const std::string ref = s.RefName(w->ref_dir);
        Result<std::shared_ptr<const StoreLayer>> layer = s.store->Open(ref, name);
        if (!layer.has_value()) {
          // No such layer (or not a lazy one): containers/storage then pulls it itself. Not
          // cached by the kernel: a registry that was down may answer next time.
          const StatusCode code = layer.error().code();
          const int err = code == StatusCode::kNotFound || code == StatusCode::kUnsupported ||
                                  code == StatusCode::kInvalidArgument
                              ? ENOENT
                              : StatusToErrno(layer.error());
          return (void)fuse_reply_err(req, err);
        }
        Result<uint64_t> slot = s.names->Slot(w->ref_dir, name);
        if (!slot.has_value()) return ReplyStatus(req, "lookup", parent, slot.error());
        const uint64_t ino = Ino(*slot, kLayerDirK);
        ReplyEntry(req, ino, DirAttr(ino), kImmutableTimeoutSeconds);
        return;
      }
      case Where::Kind::kLayerDir: {
        uint64_t ino = 0;
        if (name == "info") {
          ino = Ino(w->slot, kInfoK);
        } else if (name == "blob") {
          ino = Ino(w->slot, kBlobK);
        } else if (name == "diff") {
          ino = Ino(w->slot, kDiffBaseK + NodeTable::kRootIno);
        } else {
          // `use` and anything else: never there (create still reaches the filesystem).
          return (void)fuse_reply_err(req, ENOENT);
        }
        Result<struct stat> st = Attr(s, ino);
        if (!st.has_value()) return ReplyStatus(req, "lookup", parent, st.error());
        ReplyEntry(req, ino, *st, kImmutableTimeoutSeconds);
        return;
      }
      case Where::Kind::kDiff: {
        Result<std::shared_ptr<const StoreLayer>> layer = s.LayerOf(w->slot);
        if (!layer.has_value()) return ReplyStatus(req, "lookup", parent, layer.error());
        Result<struct stat> st = (*layer)->diff->Lookup(w->inner, name);
        if (!st.has_value()) {
          if (st.error().code() == StatusCode::kNotFound) return ReplyNegativeEntry(req);
          return ReplyStatus(req, "lookup", parent, st.error());
        }
        const uint64_t ino = Ino(w->slot, kDiffBaseK + st->st_ino);
        st->st_ino = static_cast<ino_t>(ino);
        ReplyEntry(req, ino, *st, kImmutableTimeoutSeconds);
        return;
      }
      case Where::Kind::kInfo:
      case Where::Kind::kBlob:
        return (void)fuse_reply_err(req, ENOTDIR);
    }
  });
}

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* /*fi*/) noexcept {
  Guard(req, "getattr", [&] {
    Result<struct stat> st = Attr(StateOf(req), ino);
    if (!st.has_value()) return ReplyStatus(req, "getattr", ino, st.error());
    fuse_reply_attr(req, &*st, kImmutableTimeoutSeconds);
  });
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Guard(req, "open", [&] {
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return (void)fuse_reply_err(req, EROFS);
    Result<Where> w = StateOf(req).Locate(ino);
    if (!w.has_value()) return ReplyStatus(req, "open", ino, w.error());
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
  });
}

void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* /*fi*/) noexcept {
  Guard(req, "read", [&] {
    State& s = StateOf(req);
    Result<Where> w = s.Locate(ino);
    if (!w.has_value()) return ReplyStatus(req, "read", ino, w.error());
    const uint64_t offset = off < 0 ? 0 : static_cast<uint64_t>(off);
    if (w->kind != Where::Kind::kInfo && w->kind != Where::Kind::kBlob &&
        w->kind != Where::Kind::kDiff) {
      return (void)fuse_reply_err(req, EISDIR);
    }
    Result<std::shared_ptr<const StoreLayer>> layer = s.LayerOf(w->slot);
    if (!layer.has_value()) return ReplyStatus(req, "read", ino, layer.error());
    switch (w->kind) {
      case Where::Kind::kInfo: {
        const std::string& info = (*layer)->info;
        if (offset >= info.size()) return (void)fuse_reply_buf(req, nullptr, 0);
        const size_t n = std::min(size, info.size() - offset);
        fuse_reply_buf(req, info.data() + offset, n);
        return;
      }
      case Where::Kind::kBlob: {
        const StoreLayer& l = **layer;
        const uint64_t total = l.descriptor.size > 0 ? static_cast<uint64_t>(l.descriptor.size) : 0;
        if (offset >= total) return (void)fuse_reply_buf(req, nullptr, 0);
        const uint64_t n = std::min<uint64_t>(size, total - offset);
        Result<std::string> bytes =
            l.source->ReadBlobRange(l.descriptor.digest, ByteRange{offset, n});
        if (!bytes.has_value()) return ReplyStatus(req, "read", ino, bytes.error());
        if (bytes->size() != n) return ReplyErrno(req, "read", ino, EIO);
        fuse_reply_buf(req, bytes->data(), bytes->size());
        return;
      }
      case Where::Kind::kDiff: {
        Result<std::string> bytes = (*layer)->diff->Read(w->inner, offset, size);
        if (!bytes.has_value()) return ReplyStatus(req, "read", ino, bytes.error());
        fuse_reply_buf(req, bytes->data(), bytes->size());
        return;
      }
      default:
        return (void)fuse_reply_err(req, EISDIR);
    }
  });
}

void ReadLink(fuse_req_t req, fuse_ino_t ino) noexcept {
  Guard(req, "readlink", [&] {
    State& s = StateOf(req);
    Result<Where> w = s.Locate(ino);
    if (!w.has_value()) return ReplyStatus(req, "readlink", ino, w.error());
    if (w->kind != Where::Kind::kDiff) return (void)fuse_reply_err(req, EINVAL);
    Result<std::shared_ptr<const StoreLayer>> layer = s.LayerOf(w->slot);
    if (!layer.has_value()) return ReplyStatus(req, "readlink", ino, layer.error());
    Result<std::string_view> target = (*layer)->diff->ReadLink(w->inner);
    if (!target.has_value()) return ReplyStatus(req, "readlink", ino, target.error());
    fuse_reply_readlink(req, std::string(*target).c_str());
  });
}

// The entries of directory `ino`, ".", ".." first. Made again on every readdir: a handle
// kept from opendir would mean nothing to a daemon that took the mount over.
using Listing = std::vector<std::pair<std::string, struct stat>>;

Result<Listing> ListDir(State& s, uint64_t ino) {
  IMGFS_ASSIGN_OR_RETURN(Where w, s.Locate(ino));
  Listing listing;
  listing.emplace_back(".", DirAttr(ino));
  listing.emplace_back("..", DirAttr(FUSE_ROOT_ID));
  switch (w.kind) {
    case Where::Kind::kRoot:
      break;  // nothing is listed: names are resolved on lookup
    case Where::Kind::kRefDir:
      for (auto& [slot, digest] : s.names->LayersIn(w.ref_dir)) {
        listing.emplace_back(std::move(digest), DirAttr(Ino(slot, kLayerDirK)));
      }
      break;
    case Where::Kind::kLayerDir:
      for (auto [name, k] : {std::pair<const char*, uint64_t>{"blob", kBlobK},
                             {"diff", kDiffBaseK + NodeTable::kRootIno},
                             {"info", kInfoK}}) {
        Result<struct stat> st = Attr(s, Ino(w.slot, k));
        if (st.has_value()) listing.emplace_back(name, *st);
      }
      break;
    case Where::Kind::kDiff: {
      IMGFS_ASSIGN_OR_RETURN(std::shared_ptr<const StoreLayer> layer, s.LayerOf(w.slot));
      IMGFS_ASSIGN_OR_RETURN(std::vector<DirEntry> names, layer->diff->table().ReadDir(w.inner));
      for (const DirEntry& e : names) {
        Result<struct stat> st = layer->diff->GetAttr(e.ino);
        if (!st.has_value()) continue;
        st->st_ino = static_cast<ino_t>(Ino(w.slot, kDiffBaseK + e.ino));
        listing.emplace_back(std::string(e.name), *st);
      }
      break;
    }
    case Where::Kind::kInfo:
    case Where::Kind::kBlob:
      return Status::InvalidArgument("not a directory");
  }
  return listing;
}

void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Guard(req, "opendir", [&] {
    State& s = StateOf(req);
    Result<Where> w = s.Locate(ino);
    if (!w.has_value()) return ReplyStatus(req, "opendir", ino, w.error());
    if (w->kind == Where::Kind::kInfo || w->kind == Where::Kind::kBlob) {
      return (void)fuse_reply_err(req, ENOTDIR);
    }
    fi->fh = 0;
    fuse_reply_open(req, fi);
  });
}

void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
             fuse_file_info* /*fi*/) noexcept {
  Guard(req, "readdir", [&] {
    Result<Listing> listing = ListDir(StateOf(req), ino);
    if (!listing.has_value()) return ReplyStatus(req, "readdir", ino, listing.error());
    std::string buf(size, '\0');
    size_t used = 0;
    for (size_t i = off < 0 ? 0 : static_cast<size_t>(off); i < listing->size(); ++i) {
      const auto& [name, st] = (*listing)[i];
      const size_t n = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st,
                                         static_cast<off_t>(i + 1));
      if (n > size - used) break;
      used += n;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
  Guard(req, "getxattr", [&] {
    State& s = StateOf(req);
    Result<Where> w = s.Locate(ino);
    if (!w.has_value()) return ReplyStatus(req, "getxattr", ino, w.error());
    if (w->kind == Where::Kind::kLayerDir && std::string_view(name) == kReferencesXattr) {
      const LayerStoreJournal::Layer l = s.SlotAt(w->slot);
      return ReplyXattr(req, std::to_string(s.store->References(l.ref_element, l.digest_element)),
                        size);
    }
    if (w->kind != Where::Kind::kDiff) return (void)fuse_reply_err(req, ENODATA);
    // The table itself, not ImageFilesystem::GetXattr: the overlay markers are this tree's
    // point (ToOverlayFormat dropped the layer's own).
    Result<std::shared_ptr<const StoreLayer>> layer = s.LayerOf(w->slot);
    if (!layer.has_value()) return ReplyStatus(req, "getxattr", ino, layer.error());
    Result<std::string_view> value = (*layer)->diff->table().GetXattr(w->inner, name);
    if (!value.has_value()) return (void)fuse_reply_err(req, ENODATA);
    ReplyXattr(req, *value, size);
  });
}

void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept {
  Guard(req, "listxattr", [&] {
    State& s = StateOf(req);
    Result<Where> w = s.Locate(ino);
    if (!w.has_value()) return ReplyStatus(req, "listxattr", ino, w.error());
    std::string list;
    if (w->kind == Where::Kind::kLayerDir) {
      list.append(kReferencesXattr);
      list.push_back('\0');
    }
    if (w->kind == Where::Kind::kDiff) {
      Result<std::shared_ptr<const StoreLayer>> layer = s.LayerOf(w->slot);
      if (!layer.has_value()) return ReplyStatus(req, "listxattr", ino, layer.error());
      Result<std::vector<std::string_view>> names = (*layer)->diff->table().ListXattr(w->inner);
      if (!names.has_value()) return ReplyStatus(req, "listxattr", ino, names.error());
      for (std::string_view n : *names) {
        list.append(n);
        list.push_back('\0');
      }
    }
    ReplyXattr(req, list, size);
  });
}

// `use` in a layer directory: a reference taken; the file is never made (ENOENT says so).
void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t /*mode*/,
            fuse_file_info* /*fi*/) noexcept {
  Guard(req, "create", [&] {
    State& s = StateOf(req);
    Result<Where> w = s.Locate(parent);
    if (!w.has_value()) return ReplyStatus(req, "create", parent, w.error());
    if (w->kind != Where::Kind::kLayerDir || std::string_view(name) != "use") {
      return (void)fuse_reply_err(req, EROFS);
    }
    const LayerStoreJournal::Layer l = s.SlotAt(w->slot);
    Result<int64_t> count = s.store->Use(l.ref_element, l.digest_element);
    if (!count.has_value()) {
      // Not ENOENT whatever the cause: containers/storage takes ENOENT for "reference taken".
      IMGFS_LOG(kWarning) << "layer store: use " << l.digest_element << ": "
                          << count.error().ToString();
      return (void)fuse_reply_err(req, EIO);
    }
    IMGFS_LOG(kDebug) << "layer store: use " << l.digest_element << " (" << *count
                      << " references)";
    fuse_reply_err(req, ENOENT);
  });
}

void MkNod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
           dev_t /*rdev*/) noexcept {
  if (S_ISREG(mode)) {
    fuse_file_info fi{};
    Create(req, parent, name, mode, &fi);
    return;
  }
  fuse_reply_err(req, EROFS);
}

// rmdir of a layer directory: a reference dropped (ENOENT says the store took note).
void RmDir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Guard(req, "rmdir", [&] {
    State& s = StateOf(req);
    Result<Where> w = s.Locate(parent);
    if (!w.has_value()) return ReplyStatus(req, "rmdir", parent, w.error());
    if (w->kind != Where::Kind::kRefDir) return (void)fuse_reply_err(req, EROFS);
    const std::string ref = s.RefName(w->ref_dir);
    const int64_t left = s.store->Release(ref, name);
    IMGFS_LOG(kDebug) << "layer store: release " << name << " (" << left << " references)";
    fuse_reply_err(req, ENOENT);
  });
}

void StatFs(fuse_req_t req, fuse_ino_t /*ino*/) noexcept {
  struct statvfs st {};
  st.f_bsize = 4096;
  st.f_frsize = 4096;
  st.f_namemax = 255;
  fuse_reply_statfs(req, &st);
}

const fuse_lowlevel_ops& LayerStoreOps() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = Init;
    o.lookup = Lookup;
    o.getattr = GetAttr;
    o.readlink = ReadLink;
    o.mknod = MkNod;
    o.rmdir = RmDir;
    o.open = Open;
    o.read = Read;
    o.statfs = StatFs;
    o.getxattr = GetXattr;
    o.listxattr = ListXattr;
    o.opendir = OpenDir;
    o.readdir = ReadDir;
    o.create = Create;
    return o;
  }();
  return ops;
}

}  // namespace

Result<std::unique_ptr<LayerStoreSession>> LayerStoreSession::Mount(
    LayerStore* store, const std::string& mountpoint, LayerStoreSessionOptions options) {
  std::unique_ptr<LayerStoreSession> s(new LayerStoreSession());
  s->state_ = std::make_unique<State>();
  s->state_->store = store;
  s->state_->on_ready = std::move(options.on_ready);
  s->state_->on_connection = std::move(options.on_connection);
  s->state_->handover = options.handover;
  s->state_->names = std::make_unique<LayerStoreJournal>(options.journal_fd);
  IMGFS_RETURN_IF_ERROR(s->state_->names->Load());
  s->mountpoint_ = mountpoint;
  s->max_threads_ = options.max_threads;
  std::string opts = "rw,default_permissions,allow_other,subtype=imgfs-layer-store,fsname=imgfs";
  for (const std::string& o : options.mount_options) {
    if (!o.empty()) opts += "," + o;
  }
  // libfuse 3.14 takes "/dev/fd/N" as an open /dev/fuse descriptor to serve (the mount exists
  // already); the session owns and closes N, so it gets a copy of the keeper's.
  std::string target = mountpoint;
  if (options.handover != nullptr) {
    const int fd = fcntl(options.handover->fuse_fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return Status::FromErrno(errno, "taking over the FUSE connection");
    target = "/dev/fd/" + std::to_string(fd);
  }
  IMGFS_ASSIGN_OR_RETURN(fuse_session * se, MountLowLevel(LayerStoreOps(), s->state_.get(), opts,
                                                          options.debug, target, mountpoint));
  s->state_->session = se;
  s->mounted_ = true;
  return s;
}

LayerStoreSession::~LayerStoreSession() {
  if (state_ != nullptr && state_->session != nullptr) {
    if (mounted_ && state_->handover == nullptr) fuse_session_unmount(state_->session);
    fuse_session_destroy(state_->session);
  }
}

Status LayerStoreSession::Run() {
  fuse_session* se = state_->session;
  if (fuse_set_signal_handlers(se) != 0) return Status::Internal("cannot set signal handlers");
  Status init = ServeInitRequest(se, state_->handover, state_->on_connection,
                                 /*handle_killpriv_v2=*/false);  // read-only
  int rc = 0;
  if (init.ok() && !fuse_session_exited(se)) rc = ServeLowLevel(se, max_threads_);
  fuse_remove_signal_handlers(se);
  if (state_->handover != nullptr) {
    // libfuse unmounts only what it mounted; a signal ends a taken-over mount here.
    if (!ConnectionGone(fuse_session_fd(se))) {
      Status st = Unmount(mountpoint_, /*lazy=*/true);
      if (!st.ok()) IMGFS_LOG(kWarning) << "unmounting: " << st.ToString();
    }
  } else {
    fuse_session_unmount(se);
  }
  mounted_ = false;
  if (!init.ok()) return init;
  if (rc < 0) return Status::Io("FUSE loop failed: " + std::string(strerror(-rc)));
  return Status::Ok();
}

}  // namespace imgfs::fs
