// imgfs — the FUSE mount of an Additional Layer Store.
#include "fs/fuse/layer_store_ops.h"

#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/mutex.h"
#include "fs/fuse/fuse_ops.h"
#include "fs/fuse/lowlevel.h"
#include "fs/fuse/reply.h"

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
constexpr uint64_t kMaxRefDirs = (uint64_t{1} << kSlotShift) - 2;

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

  struct Slot {
    std::string ref_element;
    std::string digest_element;
    uint64_t ref_dir = 0;
  };
  mutable Mutex mu;
  std::map<std::string, uint64_t, std::less<>> ref_dirs IMGFS_GUARDED_BY(mu);  // name → ino
  std::vector<std::string> ref_names IMGFS_GUARDED_BY(mu);                     // ino - 2 → name
  std::map<std::string, uint64_t, std::less<>> slot_of IMGFS_GUARDED_BY(mu);   // ref/digest
  std::vector<Slot> slots IMGFS_GUARDED_BY(mu);                                // slot - 1

  Result<Where> Locate(uint64_t ino) const {
    Where w;
    if (ino == FUSE_ROOT_ID) return w;
    MutexLock lock(&mu);
    if (ino < (uint64_t{1} << kSlotShift)) {
      if (ino < 2 || ino - 2 >= ref_names.size()) return Status::NotFound("no such inode");
      w.kind = Where::Kind::kRefDir;
      w.ref_dir = ino;
      return w;
    }
    w.slot = ino >> kSlotShift;
    const uint64_t k = ino & ((uint64_t{1} << kSlotShift) - 1);
    if (w.slot == 0 || w.slot > slots.size()) return Status::NotFound("no such inode");
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

  const Slot* SlotAt(uint64_t slot) const IMGFS_REQUIRES(mu) { return &slots[slot - 1]; }

  // The layer of `slot`, from the store (which loads it again after its last reference was
  // dropped and it was freed).
  Result<std::shared_ptr<const StoreLayer>> LayerOf(uint64_t slot) const {
    std::string ref;
    std::string digest;
    {
      MutexLock lock(&mu);
      ref = slots[slot - 1].ref_element;
      digest = slots[slot - 1].digest_element;
    }
    return store->Open(ref, digest);
  }

  Result<uint64_t> RefDir(std::string_view name) {
    MutexLock lock(&mu);
    auto it = ref_dirs.find(name);
    if (it != ref_dirs.end()) return it->second;
    if (ref_names.size() >= kMaxRefDirs) return Status::Unsupported("too many images");
    const uint64_t ino = 2 + ref_names.size();
    ref_names.emplace_back(name);
    ref_dirs.emplace(std::string(name), ino);
    return ino;
  }

  std::string RefName(uint64_t ino) const {
    MutexLock lock(&mu);
    return ref_names[ino - 2];
  }

  uint64_t SlotFor(const std::string& ref, const std::string& digest, uint64_t ref_dir) {
    MutexLock lock(&mu);
    const std::string key = ref + "/" + digest;
    auto it = slot_of.find(key);
    if (it != slot_of.end()) return it->second;
    slots.push_back(Slot{ref, digest, ref_dir});
    slot_of.emplace(key, slots.size());
    return slots.size();
  }
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
        Result<uint64_t> ino = s.RefDir(name);
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
        const uint64_t slot = s.SlotFor(ref, std::string(name), w->ref_dir);
        const uint64_t ino = Ino(slot, kLayerDirK);
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

// One directory listing, made at opendir and kept in fi->fh.
struct Listing {
  std::vector<std::pair<std::string, struct stat>> entries;
};

void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Guard(req, "opendir", [&] {
    State& s = StateOf(req);
    Result<Where> w = s.Locate(ino);
    if (!w.has_value()) return ReplyStatus(req, "opendir", ino, w.error());
    auto listing = std::make_unique<Listing>();
    listing->entries.emplace_back(".", DirAttr(ino));
    listing->entries.emplace_back("..", DirAttr(FUSE_ROOT_ID));
    switch (w->kind) {
      case Where::Kind::kRoot:
        break;  // nothing is listed: names are resolved on lookup
      case Where::Kind::kRefDir: {
        MutexLock lock(&s.mu);
        for (size_t i = 0; i < s.slots.size(); ++i) {
          if (s.slots[i].ref_dir != w->ref_dir) continue;
          const uint64_t child = Ino(i + 1, kLayerDirK);
          listing->entries.emplace_back(s.slots[i].digest_element, DirAttr(child));
        }
        break;
      }
      case Where::Kind::kLayerDir: {
        for (auto [name, k] : {std::pair<const char*, uint64_t>{"blob", kBlobK},
                               {"diff", kDiffBaseK + NodeTable::kRootIno},
                               {"info", kInfoK}}) {
          Result<struct stat> st = Attr(s, Ino(w->slot, k));
          if (st.has_value()) listing->entries.emplace_back(name, *st);
        }
        break;
      }
      case Where::Kind::kDiff: {
        Result<std::shared_ptr<const StoreLayer>> layer = s.LayerOf(w->slot);
        if (!layer.has_value()) return ReplyStatus(req, "opendir", ino, layer.error());
        Result<std::vector<DirEntry>> names = (*layer)->diff->table().ReadDir(w->inner);
        if (!names.has_value()) return ReplyStatus(req, "opendir", ino, names.error());
        for (const DirEntry& e : *names) {
          Result<struct stat> st = (*layer)->diff->GetAttr(e.ino);
          if (!st.has_value()) continue;
          st->st_ino = static_cast<ino_t>(Ino(w->slot, kDiffBaseK + e.ino));
          listing->entries.emplace_back(std::string(e.name), *st);
        }
        break;
      }
      default:
        return (void)fuse_reply_err(req, ENOTDIR);
    }
    fi->fh = reinterpret_cast<uint64_t>(listing.release());
    fuse_reply_open(req, fi);
  });
}

void ReadDir(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off,
             fuse_file_info* fi) noexcept {
  Guard(req, "readdir", [&] {
    const auto* listing = reinterpret_cast<const Listing*>(fi->fh);
    std::string buf(size, '\0');
    size_t used = 0;
    for (size_t i = off < 0 ? 0 : static_cast<size_t>(off); i < listing->entries.size(); ++i) {
      const auto& [name, st] = listing->entries[i];
      const size_t n = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st,
                                         static_cast<off_t>(i + 1));
      if (n > size - used) break;
      used += n;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void ReleaseDir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) noexcept {
  delete reinterpret_cast<Listing*>(fi->fh);  // NOLINT(cppcoreguidelines-owning-memory)
  fuse_reply_err(req, 0);
}

void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
  Guard(req, "getxattr", [&] {
    State& s = StateOf(req);
    Result<Where> w = s.Locate(ino);
    if (!w.has_value()) return ReplyStatus(req, "getxattr", ino, w.error());
    if (w->kind == Where::Kind::kLayerDir && std::string_view(name) == kReferencesXattr) {
      std::string ref;
      std::string digest;
      {
        MutexLock lock(&s.mu);
        ref = s.SlotAt(w->slot)->ref_element;
        digest = s.SlotAt(w->slot)->digest_element;
      }
      return ReplyXattr(req, std::to_string(s.store->References(ref, digest)), size);
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
    std::string ref;
    std::string digest;
    {
      MutexLock lock(&s.mu);
      ref = s.SlotAt(w->slot)->ref_element;
      digest = s.SlotAt(w->slot)->digest_element;
    }
    Result<int64_t> count = s.store->Use(ref, digest);
    if (!count.has_value()) return ReplyStatus(req, "create", parent, count.error());
    IMGFS_LOG(kDebug) << "layer store: use " << digest << " (" << *count << " references)";
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
    o.releasedir = ReleaseDir;
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
  s->max_threads_ = options.max_threads;
  std::string opts = "rw,default_permissions,allow_other,subtype=imgfs-layer-store,fsname=imgfs";
  for (const std::string& o : options.mount_options) {
    if (!o.empty()) opts += "," + o;
  }
  IMGFS_ASSIGN_OR_RETURN(fuse_session * se, MountLowLevel(LayerStoreOps(), s->state_.get(), opts,
                                                          options.debug, mountpoint, mountpoint));
  s->state_->session = se;
  s->mounted_ = true;
  return s;
}

LayerStoreSession::~LayerStoreSession() {
  if (state_ != nullptr && state_->session != nullptr) {
    if (mounted_) fuse_session_unmount(state_->session);
    fuse_session_destroy(state_->session);
  }
}

Status LayerStoreSession::Run() {
  fuse_session* se = state_->session;
  if (fuse_set_signal_handlers(se) != 0) return Status::Internal("cannot set signal handlers");
  const int rc = ServeLowLevel(se, max_threads_);
  fuse_remove_signal_handlers(se);
  fuse_session_unmount(se);
  mounted_ = false;
  if (rc < 0) return Status::Io("FUSE loop failed: " + std::string(strerror(-rc)));
  return Status::Ok();
}

}  // namespace imgfs::fs
