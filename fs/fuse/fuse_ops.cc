// imgfs — the libfuse low-level operations that serve an ImageFilesystem.
#include "fs/fuse/fuse_ops.h"

#include <fuse_lowlevel.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "base/byte_slices.h"
#include "base/log.h"
#include "fs/core/filesystem.h"
#include "fs/fuse/read_ahead.h"
#include "fs/fuse/reply.h"

namespace imgfs::fs {
namespace {

const ImageFilesystem& Fs(fuse_req_t req) { return *ContextOf(req).filesystem; }

void Init(void* userdata, fuse_conn_info* conn) noexcept {
  FuseRequestCounts& requests = static_cast<FuseContext*>(userdata)->requests;
  requests.Count(FuseOp::kInit);
  // Content never changes and reads need no per-open state: when the kernel can open files
  // and directories by itself (keeping their pages and listings, sending no RELEASE), Open
  // and Opendir tell it to.
  requests.set_no_open((conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0);
  requests.set_no_opendir((conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0);
  // Let the kernel batch readdir with attributes.
  if ((conn->capable & FUSE_CAP_READDIRPLUS) != 0) conn->want |= FUSE_CAP_READDIRPLUS;
  if ((conn->capable & FUSE_CAP_READDIRPLUS_AUTO) != 0) conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
  if ((conn->capable & FUSE_CAP_ASYNC_READ) != 0) conn->want |= FUSE_CAP_ASYNC_READ;
  if ((conn->capable & FUSE_CAP_CACHE_SYMLINKS) != 0) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  if ((conn->capable & FUSE_CAP_EXPORT_SUPPORT) != 0) conn->want |= FUSE_CAP_EXPORT_SUPPORT;
  const std::string& mountpoint = static_cast<FuseContext*>(userdata)->mountpoint;
  if (!mountpoint.empty()) {
    conn->max_readahead = RaiseMountReadAhead(mountpoint, kMountReadAheadKib, conn->max_readahead);
  }
  RunInitHook(userdata);
}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Serve(req, FuseOp::kLookup, [&] {
    Result<struct stat> st = Fs(req).Lookup(parent, name);
    if (!st.has_value()) {
      if (st.error().code() == StatusCode::kNotFound) return ReplyNegativeEntry(req);
      if (st.error().code() == StatusCode::kInvalidArgument) {
        fuse_reply_err(req, ENOTDIR);  // the parent is not a directory
        return;
      }
      return ReplyStatus(req, "lookup", parent, st.error());
    }
    ReplyEntry(req, st->st_ino, *st, kImmutableTimeoutSeconds);
  });
}

// Nodes live until unmount (the tree is immutable), so there is nothing to forget.
void Forget(fuse_req_t req, fuse_ino_t, uint64_t) noexcept {
  ContextOf(req).requests.Count(FuseOp::kForget);
  fuse_reply_none(req);
}

void Getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) noexcept {
  Serve(req, FuseOp::kGetattr, [&] {
    Result<struct stat> st = Fs(req).GetAttr(ino);
    if (!st.has_value()) return ReplyStatus(req, "getattr", ino, st.error());
    fuse_reply_attr(req, &*st, kImmutableTimeoutSeconds);
  });
}

void Readlink(fuse_req_t req, fuse_ino_t ino) noexcept {
  Serve(req, FuseOp::kReadlink, [&] {
    Result<std::string_view> target = Fs(req).ReadLink(ino);
    if (!target.has_value()) return ReplyStatus(req, "readlink", ino, target.error());
    std::string s(*target);
    fuse_reply_readlink(req, s.c_str());
  });
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Serve(req, FuseOp::kOpen, [&] {
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC) != 0) {
      fuse_reply_err(req, EROFS);
      return;
    }
    Result<struct stat> st = Fs(req).GetAttr(ino);
    if (!st.has_value()) return ReplyStatus(req, "open", ino, st.error());
    if (S_ISDIR(st->st_mode)) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    if (ContextOf(req).requests.no_open()) {
      // "Not needed": from now on the kernel opens files itself, with keep_cache.
      fuse_reply_err(req, ENOSYS);
      return;
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
  });
}

// fi->fh is not used: 0 when the kernel opened the file itself (no_open).
void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) noexcept {
  Serve(req, FuseOp::kRead, [&] {
    ContextOf(req).requests.NoteReadSize(size);
    if (off < 0) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    Result<ByteSlices> data = Fs(req).ReadSlices(ino, static_cast<uint64_t>(off), size);
    if (!data.has_value()) return ReplyStatus(req, "read", ino, data.error());
    // Written from the reader's cached blocks: no copy gathers them first.
    std::vector<iovec> iov;
    iov.reserve(data->parts().size());
    for (std::string_view part : data->parts()) {
      iov.push_back(iovec{const_cast<char*>(part.data()), part.size()});  // writev only reads
    }
    fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
  });
}

void Release(fuse_req_t req, fuse_ino_t, fuse_file_info*) noexcept {
  ContextOf(req).requests.Count(FuseOp::kRelease);
  fuse_reply_err(req, 0);
}

void Opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Serve(req, FuseOp::kOpendir, [&] {
    Result<struct stat> st = Fs(req).GetAttr(ino);
    if (!st.has_value()) return ReplyStatus(req, "opendir", ino, st.error());
    if (!S_ISDIR(st->st_mode)) {
      fuse_reply_err(req, ENOTDIR);
      return;
    }
    if (ContextOf(req).requests.no_opendir()) {
      // "Not needed": the kernel opens directories itself, with cache_readdir.
      fuse_reply_err(req, ENOSYS);
      return;
    }
    fi->keep_cache = 1;
    fi->cache_readdir = 1;
    fuse_reply_open(req, fi);
  });
}

// Directory offsets: 1 = ".", 2 = "..", 3 + i = the i-th child in name order. Stable across
// calls because the tree never changes.
void DoReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  const ImageFilesystem& fs = Fs(req);
  const NodeTable& table = fs.table();
  Result<uint64_t> count = table.ChildCount(ino);
  if (!count.has_value())
    return ReplyStatus(req, plus ? "readdirplus" : "readdir", ino, count.error());
  const Node* self = table.Get(ino);
  std::string buf(size, '\0');
  size_t used = 0;
  for (uint64_t pos = static_cast<uint64_t>(off); pos < *count + 2; ++pos) {
    std::string name;
    struct stat st {};
    uint64_t child = 0;
    if (pos == 0) {
      name = ".";
      child = ino;
    } else if (pos == 1) {
      name = "..";
      child = self->parent;
    } else {
      Result<DirEntry> e = table.ChildAt(ino, pos - 2);
      if (!e.has_value()) break;
      name = std::string(e->name);
      child = e->ino;
    }
    Result<struct stat> attr = fs.GetAttr(child);
    if (!attr.has_value()) {
      if (used > 0) break;  // return what we have; the error resurfaces on the next call
      return ReplyStatus(req, "readdir", ino, attr.error());
    }
    st = *attr;
    size_t n;
    if (plus) {
      fuse_entry_param e = EntryParam(st.st_ino, st, kImmutableTimeoutSeconds);
      if (pos < 2) {
        // "." and ".." do not take a lookup reference.
        e = fuse_entry_param{};
        e.attr.st_ino = st.st_ino;
        e.attr.st_mode = st.st_mode;
      }
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e,
                                 static_cast<off_t>(pos + 1));
    } else {
      n = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st,
                            static_cast<off_t>(pos + 1));
    }
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void Readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) noexcept {
  Serve(req, FuseOp::kReaddir, [&] { DoReaddir(req, ino, size, off, /*plus=*/false); });
}

void Readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) noexcept {
  Serve(req, FuseOp::kReaddirplus, [&] { DoReaddir(req, ino, size, off, /*plus=*/true); });
}

void Releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) noexcept {
  ContextOf(req).requests.Count(FuseOp::kReleasedir);
  fuse_reply_err(req, 0);
}

void Statfs(fuse_req_t req, fuse_ino_t) noexcept {
  Serve(req, FuseOp::kStatfs, [&] {
    struct statvfs st = Fs(req).StatFs();
    fuse_reply_statfs(req, &st);
  });
}

void Getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
  Serve(req, FuseOp::kGetxattr, [&] {
    if (!Fs(req).has_xattrs()) {
      fuse_reply_err(req, ENOSYS);  // the kernel stops asking: EOPNOTSUPP from now on
      return;
    }
    Result<std::string_view> value = Fs(req).GetXattr(ino, name);
    if (!value.has_value()) {
      if (value.error().code() == StatusCode::kNotFound) {
        fuse_reply_err(req, ENODATA);
        return;
      }
      return ReplyStatus(req, "getxattr", ino, value.error());
    }
    ReplyXattr(req, *value, size);
  });
}

void Listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept {
  Serve(req, FuseOp::kListxattr, [&] {
    if (!Fs(req).has_xattrs()) {
      fuse_reply_err(req, ENOSYS);  // the kernel stops asking: EOPNOTSUPP from now on
      return;
    }
    Result<std::vector<std::string_view>> names = Fs(req).ListXattr(ino);
    if (!names.has_value()) return ReplyStatus(req, "listxattr", ino, names.error());
    std::string list;
    for (std::string_view n : *names) {
      list.append(n);
      list.push_back('\0');
    }
    ReplyXattr(req, list, size);
  });
}

void Access(fuse_req_t req, fuse_ino_t ino, int mask) noexcept {
  Serve(req, FuseOp::kAccess, [&] {
    // Permission bits are checked by the kernel (default_permissions); only writes are ours.
    if ((mask & W_OK) != 0) {
      fuse_reply_err(req, EROFS);
      return;
    }
    Result<struct stat> st = Fs(req).GetAttr(ino);
    if (!st.has_value()) return ReplyStatus(req, "access", ino, st.error());
    fuse_reply_err(req, 0);
  });
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  // In the order of struct fuse_lowlevel_ops.
  ops.init = Init;
  ops.lookup = Lookup;
  ops.forget = Forget;
  ops.getattr = Getattr;
  ops.readlink = Readlink;
  ops.open = Open;
  ops.read = Read;
  ops.release = Release;
  ops.opendir = Opendir;
  ops.readdir = Readdir;
  ops.releasedir = Releasedir;
  ops.statfs = Statfs;
  ops.getxattr = Getxattr;
  ops.listxattr = Listxattr;
  ops.access = Access;
  ops.readdirplus = Readdirplus;
  return ops;
}

}  // namespace

int StatusToErrno(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
      return 0;
    case StatusCode::kNotFound:
      return ENOENT;
    case StatusCode::kInvalidArgument:
      return EINVAL;
    case StatusCode::kPermissionDenied:
      return EACCES;
    case StatusCode::kUnsupported:
      return ENOTSUP;
    case StatusCode::kNoSpace:
      return ENOSPC;
    case StatusCode::kCorrupt:
    case StatusCode::kUnavailable:
    case StatusCode::kIo:
    case StatusCode::kInternal:
      return EIO;
  }
  return EIO;
}

void RunInitHook(void* userdata) noexcept {
  auto* ctx = static_cast<FuseContext*>(userdata);
  if (!ctx->on_init) return;
  try {
    ctx->on_init();
  } catch (...) {
    IMGFS_LOG(kError) << "init hook threw";
  }
}

const fuse_lowlevel_ops& ImageFilesystemOps() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

}  // namespace imgfs::fs
